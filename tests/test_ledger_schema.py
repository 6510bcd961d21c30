"""Schema revisions and bad files: clear one-line errors, migrations that keep every row."""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from test_ledger_support import BACKENDS, REPO_ROOT, backend_url, new_signer, populated, run_cli

import ledger
from ledger import Ledger, LedgerOpenError, SchemaVersionError, schema
from ledger.engine import make_engine
from ledger.models import Base


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


def one_error_line(args: list[str | Path]) -> str:
    result = run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_unknown_schema_revision_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    populated(f"sqlite:///{path}", new_signer(tmp_path), evaluations=1).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    with pytest.raises(SchemaVersionError, match=f"{path}: unknown schema revision '0099_from_the_future'"):
        Ledger.open(f"sqlite:///{path}")
    line = one_error_line(["ledger", "history", "--url", path])
    assert line.startswith(f"error: {path}: unknown schema revision") and "newer evalbot" in line


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
    with pytest.raises(
        LedgerOpenError, match=rf"{path}: not an evalbot ledger \(no schema revision; tables: recipes\)"
    ):
        Ledger.open(f"sqlite:///{path}")
    assert one_error_line(["ledger", "verify", "--url", path]).startswith(f"error: {path}: not an evalbot ledger")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(LedgerOpenError, match=f"{path}: not a SQLite ledger or the file is corrupted"):
        Ledger.open(f"sqlite:///{path}")
    assert "corrupted" in one_error_line(["ledger", "frontier", "--url", path])
    assert path.read_bytes().startswith(b"this is a text file")  # opening it did not rewrite it


def test_a_ledger_corrupted_inside_gives_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    populated(f"sqlite:///{path}", new_signer(tmp_path), evaluations=60).close()
    assert not Path(f"{path}-wal").exists()  # everything is in the main file now
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * 2 :] = b"\xa5" * (len(data) - page * 2)  # keep the header and schema pages only
    path.write_bytes(bytes(data))
    line = one_error_line(["ledger", "verify", "--url", path])
    assert line.startswith(f"error: {path}: not a SQLite ledger or the file is corrupted")


def test_an_empty_database_is_not_a_ledger_until_created(url: str) -> None:
    with pytest.raises(LedgerOpenError, match=r"no ledger here|empty database, not a ledger"):
        Ledger.open(url)
    Ledger.open(url, create=True).close()
    with Ledger.open(url) as ledger:
        assert ledger.head() == (0, "0" * 64)
        assert ledger.verify().ok


def test_migration_from_the_previous_revision_keeps_every_row(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with populated(url, signer, evaluations=12) as ledger:
        before = [(e.seq, e.commit_sha, e.verdict, e.entry.entry_hash) for e in ledger.history(limit=None)]
        frontier_before = [(a.seq, a.commit_sha) for a in ledger.frontier_history()]
        head_before = ledger.head()
    engine = make_engine(url)
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "0001")
    engine.dispose()

    head = schema.head_revision()
    with pytest.raises(SchemaVersionError, match=f"revision 0001, this evalbot needs {head}; run `evalbot ledger"):
        Ledger.open(url)
    migrated = run_cli("ledger", "migrate", "--url", url, check=True)
    assert f"upgraded schema revision 0001 → {head}" in migrated.stdout

    with Ledger.open(url, signer=signer) as ledger:
        after = [(e.seq, e.commit_sha, e.verdict, e.entry.entry_hash) for e in ledger.history(limit=None)]
        assert after == before and len(after) == 12
        assert [(a.seq, a.commit_sha) for a in ledger.frontier_history()] == frontier_before
        assert ledger.head() == head_before
        assert ledger.verify([signer.public_hex]).ok
    # The upgrade put the append-only triggers back.
    with pytest.raises(Exception, match="append-only"), create_engine(url).begin() as conn:
        conn.execute(text("DELETE FROM measurements"))
    again = run_cli("ledger", "migrate", "--url", url, check=True)
    assert f"already at schema revision {head}" in again.stdout


def test_models_match_the_migrations(url: str) -> None:
    """The typed models and the migration scripts describe the same tables, columns and indexes.

    Every module of the ledger package is imported first, and the components that declare tables
    on the ledger's Base (the embedded queue, ``evalbot.queue.store``), so they are held to the
    same rule.
    """
    for module in pkgutil.walk_packages(ledger.__path__, "ledger."):
        importlib.import_module(module.name)
    importlib.import_module("evalbot.queue.store")
    engine = make_engine(url)
    schema.upgrade(engine, url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
    assert set(Base.metadata.tables) >= {"entries", "evaluations", "measurements", "frontier_advances"}


def test_developer_alembic_ini_migrates_a_url(tmp_path: Path) -> None:
    """docs/ledger.md tells developers to run alembic with ledger/migrations/alembic.ini; it works."""
    target = tmp_path / "dev.sqlite"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            "ledger/migrations/alembic.ini",
            "-x",
            f"url=sqlite:///{target}",
            "upgrade",
            "head",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    with Ledger.open(f"sqlite:///{target}") as ledger:
        assert ledger.head()[0] == 0
