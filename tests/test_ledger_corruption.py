"""A corrupt but openable ledger: every ``evalbot ledger`` command says where the damage is in one
line and exits non-zero, and ``verify`` calls it corruption, not tampering.

Each case damages a real SQLite file with plain SQL after switching its append-only triggers off,
the way a torn write, a bad disk or a careless hand edit would leave it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_ledger_support import backend_url, new_signer, populated, run_cli, sha

from ledger import Ledger
from ledger.integrity import LedgerCorruptError
from ledger.verify import ProblemKind

# Every case runs the CLI several times (a few seconds each on a small machine).
pytestmark = pytest.mark.slow

# populated(…, 9): evaluation i (1-based) sits at seq i for i <= 3, i + 1 for 4..6, i + 2 for 7..9.
SEQ_OF_4 = 5


def damage(db: Path, *statements: str) -> None:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            for name in list(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()):
                conn.execute(text(f"DROP TRIGGER {name}"))
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    populated(f"sqlite:///{path}", new_signer(tmp_path), evaluations=9).close()
    return path


def one_line_error(done: object, *needles: str) -> str:
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, (done.stdout, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr
    return str(stderr)


CASES = {
    # a row with a garbage value where a timestamp belongs
    "garbage timestamp": (
        [f"UPDATE evaluations SET finished_at = 'garbage' WHERE seq = {SEQ_OF_4}"],
        f"evaluations row seq {SEQ_OF_4}, column finished_at",
    ),
    # text where a number belongs (SQLite keeps it: a REAL column has only an affinity)
    "text in a number column": (
        [f"UPDATE measurements SET speedup = 'fast' WHERE evaluation_seq = {SEQ_OF_4}"],
        f"measurements row evaluation_seq {SEQ_OF_4}, model gemma4-tiny, column speedup: 'fast' is not a number",
    ),
    # a JSON document cut short
    "truncated json": (
        [f"UPDATE evaluations SET verdict = substr(verdict, 1, 12) WHERE seq = {SEQ_OF_4}"],
        f"evaluations row seq {SEQ_OF_4}, column verdict: is not valid JSON",
    ),
    # bytes where text belongs
    "blob in a text column": (
        [f"UPDATE evaluations SET author = X'00ff' WHERE seq = {SEQ_OF_4}"],
        f"evaluations row seq {SEQ_OF_4}, column author: b'\\x00\\xff' is not text",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_show_export_and_verify_name_the_damaged_row(db: Path, case: str) -> None:
    statements, where = CASES[case]
    damage(db, *statements)
    one_line_error(run_cli("ledger", "show", sha(4), "--url", db), "the ledger's data is corrupted", where)
    one_line_error(run_cli("ledger", "history", "--url", db), where)
    out = db.parent / "evaluations.parquet"
    table = "measurements" if "measurements" in where else "evaluations"
    if case != "truncated json":  # a JSON column is text, and an export copies text as it is
        one_line_error(run_cli("ledger", "export", "--format", "parquet", "--table", table, "--out", out,
                               "--url", db), where)
        assert not out.exists()  # no half-written export left behind
    verified = run_cli("ledger", "verify", "--url", db)
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    assert f"corrupted at entry {SEQ_OF_4}: {where}" in verified.stdout.replace("\n", "")
    assert "edited?" not in verified.stdout and "broken" not in verified.stdout
    report = json.loads(run_cli("ledger", "verify", "--url", db, "--json").stdout)
    assert report["problem"]["kind"] == "corrupt" and report["problem"]["seq"] == SEQ_OF_4
    assert report["entries_checked"] <= SEQ_OF_4 - 1


def test_an_undamaged_row_of_a_damaged_ledger_still_shows(db: Path) -> None:
    """Damage in one row only refuses what reads that row."""
    damage(db, f"UPDATE evaluations SET verdict = substr(verdict, 1, 12) WHERE seq = {SEQ_OF_4}")
    shown = json.loads(run_cli("ledger", "show", sha(1), "--url", db, "--json", check=True).stdout)
    assert shown[0]["commit"] == sha(1)


def test_a_missing_table_is_named_by_every_command(db: Path) -> None:
    damage(db, "DROP TABLE measurements")
    for args in (["show", sha(4)], ["history"], ["export", "--format", "csv"], ["verify"], ["frontier"]):
        one_line_error(run_cli("ledger", *args, "--url", db), "table measurements: is missing")
    with pytest.raises(LedgerCorruptError, match="table measurements: is missing"):
        Ledger.open(f"sqlite:///{db}")


def test_an_unreadable_public_key_is_corruption_a_different_one_is_tampering(db: Path, tmp_path: Path) -> None:
    damage(db, "UPDATE signing_keys SET public_key = 'not hex'")
    report = json.loads(run_cli("ledger", "verify", "--url", db, "--json").stdout)
    assert report["problem"]["kind"] == "corrupt"
    assert "is not an Ed25519 key" in report["problem"]["message"] and "replaced?" not in report["problem"]["message"]
    damage(db, f"UPDATE signing_keys SET public_key = '{new_signer(tmp_path, 'other.key').public_hex}'")
    report = json.loads(run_cli("ledger", "verify", "--url", db, "--json").stdout)
    assert report["problem"]["kind"] == "tampered" and "replaced?" in report["problem"]["message"]


def test_an_edit_of_valid_data_is_still_tampering(db: Path) -> None:
    damage(db, f"UPDATE evaluations SET label = 'XL' WHERE seq = {SEQ_OF_4}")
    verified = run_cli("ledger", "verify", "--url", db)
    assert verified.returncode == 1 and f"broken at entry {SEQ_OF_4}" in verified.stdout
    report = json.loads(run_cli("ledger", "verify", "--url", db, "--json").stdout)
    assert report["problem"]["kind"] == "tampered"


def test_a_garbage_chain_timestamp_is_corruption(db: Path) -> None:
    damage(db, "UPDATE entries SET recorded_at = 'yesterday' WHERE seq = 3")
    verified = run_cli("ledger", "verify", "--url", db)
    assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr
    assert "corrupted at entry 3: entries row seq 3, column recorded_at" in verified.stdout.replace("\n", "")


@pytest.mark.postgres
def test_a_damaged_value_on_postgres_is_corruption_too(tmp_path: Path) -> None:
    """A server keeps column types, but JSON is text there too: verify and the reads name it."""
    urls = backend_url("postgres", tmp_path)  # skips, saying why, without a PostgreSQL server
    url = next(urls)
    try:
        populated(url, new_signer(tmp_path), evaluations=4).close()
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("UPDATE evaluations SET reasons = '[\"cut' WHERE seq = 2"))
        engine.dispose()
        with Ledger.open(url) as ledger:
            report = ledger.verify()
            assert report.problem is not None and report.problem.kind is ProblemKind.CORRUPT
            assert report.problem.seq == 2 and "evaluations row seq 2, column reasons" in report.problem.message
            with pytest.raises(LedgerCorruptError, match="evaluations row seq 2, column reasons: is not valid JSON"):
                ledger.history()
    finally:
        urls.close()
