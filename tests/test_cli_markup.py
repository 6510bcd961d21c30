"""Text with square brackets reaches the user as written: help texts ("[ledger] url") and printed
TOML snippets ("[build]", "[gates]") are never taken for console markup and dropped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from evalbot.cli import LAZY_COMMANDS, app, load_command
from tests.build_support import TEST_IMAGE, require_docker, require_nvcc

ROOT = Path(__file__).resolve().parent.parent
BRACKETS = re.compile(r"\[[^\]\s][^\]]*\]")


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and group of the CLI with its argument path, lazy ones included. (Typer vendors
    its own click, so groups are told by their ``commands``, not by click's classes.)"""
    root: Any = get_command(app)
    stack: list[tuple[list[str], Any]] = []
    for name in root.list_commands(root.context_class(root)):
        command = load_command(name) if name in LAZY_COMMANDS else root.commands[name]
        stack.append(([name], command))
    while stack:
        path, command = stack.pop()
        yield path, command
        stack.extend(([*path, sub], child) for sub, child in getattr(command, "commands", {}).items())


def help_texts(command: Any) -> list[str]:
    return [t for t in (command.help, *(getattr(p, "help", None) for p in command.params)) if t]


def test_no_help_text_loses_a_bracketed_part() -> None:
    runner = CliRunner()
    checked = 0
    for path, command in commands():
        shown = " ".join(runner.invoke(app, [*path, "--help"]).output.split())
        assert "<bool>" not in shown, path
        for text in help_texts(command):
            for section in BRACKETS.findall(text):
                assert " ".join(section.split()) in shown, (path, section)
                checked += 1
    assert checked >= 3  # --url of the ledger commands, eval's --baseline: the scan saw real cases


def test_ledger_help_shows_the_config_key() -> None:
    shown = " ".join(CliRunner().invoke(app, ["ledger", "export", "--help"]).output.split())
    assert "(default: [ledger] url)" in shown and "default:  url" not in shown


def test_a_flag_is_shown_as_a_switch() -> None:
    shown = CliRunner().invoke(app, ["watch", "--help"]).output
    assert "--once / --no-once" in shown and "<bool>" not in shown


@pytest.mark.docker
def test_build_image_prints_a_snippet_that_parses_as_toml(tmp_path: Path) -> None:
    require_docker()
    require_nvcc()
    env = {**os.environ, "EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "evalbot", "build-image", "--tag", TEST_IMAGE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    snippet = done.stdout.split("use it with:", 1)[1]
    assert "[build]" in snippet
    build = tomllib.loads(snippet)["build"]
    assert build["backend"] == "docker" and build["image"] == TEST_IMAGE
    assert all(Path(m).is_absolute() for m in build["toolchain_mounts"])
