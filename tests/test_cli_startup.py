"""CLI start-up: `evalbot --help` and light commands do not import the ledger's, the watcher's or the
build sandbox's libraries; lazily mounted commands keep their help; the ledger's errors are its own
(no evalbot import) and still reach the user as one red line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalbot.cli import LAZY_COMMANDS, load_command

HEAVY = ("sqlalchemy", "alembic", "github", "docker", "ledger", "evalbot.cli.ledger", "evalbot.cli.watch")

# Runs main() with the given arguments, then prints which heavy modules were imported.
PROBE = """
import sys
from evalbot.cli import main
sys.argv = ["evalbot", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = {heavy!r}
print("IMPORTED:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)))
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALBOT_DATA_DIR": str(tmp_path / "data"), "EVALBOT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.mark.parametrize("args", [["--help"], ["models", "list"], ["build", "--help"], ["example-repo", "--help"]])
def test_light_commands_import_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    done = _run(tmp_path, *args)
    assert "IMPORTED:\n" in done.stdout + "\n", done.stdout[-2000:] + done.stderr[-2000:]


def test_help_lists_the_lazy_commands_with_their_own_help(tmp_path: Path) -> None:
    done = _run(tmp_path, "--help")
    for name, (_, _, short) in LAZY_COMMANDS.items():
        assert name in done.stdout
        command = load_command(name)
        assert command.name == name
        assert (command.short_help or command.help or "").strip() == short


def test_a_lazy_command_runs(tmp_path: Path) -> None:
    done = _run(tmp_path, "ledger", "--help")
    assert "verify" in done.stdout and "sqlalchemy" in done.stdout.split("IMPORTED:")[1]


def test_ledger_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "EVALBOT_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "evalbot", "ledger", "verify", "--url", str(tmp_path / "none.sqlite")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "no ledger here" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_ledger_does_not_depend_on_evalbot() -> None:
    code = "import sys, ledger.errors; print(sorted(m for m in sys.modules if m.split('.')[0] == 'evalbot'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    from evalbot.errors import EvalbotError
    from ledger.errors import LedgerError

    assert not issubclass(LedgerError, EvalbotError)
