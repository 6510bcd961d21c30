"""Every way of editing, deleting, reordering or inserting ledger rows is caught by ``verify``.

Each case plays someone with write access to the database file or server who first switches the
append-only triggers off (SQLite: drops them; PostgreSQL: ``session_replication_role = replica``,
which also disables foreign keys) and then changes rows with plain SQL. ``verify`` must name the
first entry that is no longer trustworthy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text
from test_ledger_support import BACKENDS, backend_url, evaluation, new_signer, populated, run_cli, sha

from ledger import Ledger, Signer, chain
from ledger import keys as ledger_keys

# populated(…, 6): evaluations 1, 2, 3, advance 4, evaluations 5, 6, 7, advance 8.
LAST = 8


@dataclass
class Ctx:
    url: str
    signer: Signer
    tmp_path: Path


def _shift(conn: Connection, start: int, by: int) -> None:
    """Renumber entries >= start (one row at a time, from the top, so primary keys never collide)."""
    for seq in range(LAST, start - 1, -1):
        for table, column in (
            ("measurements", "evaluation_seq"),
            ("evaluations", "seq"),
            ("frontier_advances", "seq"),
            ("entries", "seq"),
        ):
            conn.execute(text(f"UPDATE {table} SET {column} = {seq + by} WHERE {column} = {seq}"))


def _swap_entries(conn: Connection, a: int, b: int) -> None:
    for table, column in (
        ("measurements", "evaluation_seq"),
        ("evaluations", "seq"),
        ("frontier_advances", "seq"),
        ("entries", "seq"),
    ):
        conn.execute(text(f"UPDATE {table} SET {column} = -1 WHERE {column} = {a}"))
        conn.execute(text(f"UPDATE {table} SET {column} = {a} WHERE {column} = {b}"))
        conn.execute(text(f"UPDATE {table} SET {column} = {b} WHERE {column} = -1"))


def _delete_entry(conn: Connection, seq: int) -> None:
    conn.execute(text(f"DELETE FROM measurements WHERE evaluation_seq = {seq}"))
    conn.execute(text(f"DELETE FROM evaluations WHERE seq = {seq}"))
    conn.execute(text(f"DELETE FROM frontier_advances WHERE seq = {seq}"))
    conn.execute(text(f"DELETE FROM entries WHERE seq = {seq}"))


def _rehash_edited_label(conn: Connection, ctx: Ctx, *, resign_entry: bool) -> None:
    """Edit a label and recompute the content hash (and optionally the entry hash) to match."""
    edited = replace(evaluation(4, author="bob"), label="XL")  # entry 5 holds the 4th evaluation
    columns, measurements = edited.columns()
    digest = chain.content_hash(chain.evaluation_content(columns, measurements))
    conn.execute(text("UPDATE evaluations SET label = 'XL' WHERE seq = 5"))
    conn.execute(text("UPDATE entries SET content_hash = :h WHERE seq = 5"), {"h": digest})
    if resign_entry:
        with Ledger.open(ctx.url) as reader:
            stored = reader.evaluation(5)
        assert stored is not None
        link = chain.entry_hash(
            seq=5,
            kind=chain.EVALUATION,
            recorded_at=stored.entry.recorded_at,
            key_id=stored.entry.key_id,
            content_hash=digest,
            prev_hash=stored.entry.prev_hash,
        )
        conn.execute(text("UPDATE entries SET entry_hash = :h WHERE seq = 5"), {"h": link})


def _insert_replayed_entry(conn: Connection, ctx: Ctx) -> None:
    """Make room at 5 and put a replay of entry 2 (same content, same signature) there."""
    _shift(conn, 5, 1)
    conn.execute(
        text(
            "INSERT INTO entries (seq, kind, recorded_at, key_id, content_hash, prev_hash, entry_hash, signature) "
            "SELECT 5, kind, recorded_at, key_id, content_hash, prev_hash, 'replayed', signature "
            "FROM entries WHERE seq = 2"
        )
    )
    conn.execute(
        text(
            "INSERT INTO evaluations SELECT 5, repo, pr, commit_sha, author, base_commit, frontier_commit, gpu, "
            "gpu_class, basket, evalbot_version, policy_hash, started_at, finished_at, status, label, reasons, "
            "verdict FROM evaluations WHERE seq = 2"
        )
    )
    conn.execute(
        text(
            "INSERT INTO measurements SELECT 5, model, tokens_per_s, frontier_tokens_per_s, speedup, "
            "speedup_ci_low, speedup_ci_high, gates_passed FROM measurements WHERE evaluation_seq = 2"
        )
    )


def _measurement(seq: int) -> str:
    return f"INSERT INTO measurements VALUES ({seq}, 'extra-model', 1.0, 1.0, 1.0, 1.0, 1.0, TRUE)"


Tamper = Callable[[Connection, Ctx], object]


def sql(*statements: str) -> Tamper:
    def run(conn: Connection, _ctx: Ctx) -> None:
        for statement in statements:
            conn.execute(text(statement))

    return run


CASES: dict[str, tuple[Tamper, int, str]] = {
    "edit a label": (sql("UPDATE evaluations SET label = 'XL' WHERE seq = 5"), 5, "does not match its hash"),
    "edit an author": (sql("UPDATE evaluations SET author = 'mallory' WHERE seq = 1"), 1, "does not match"),
    "reformat the verdict json": (
        sql("UPDATE evaluations SET verdict = verdict || ' ' WHERE seq = 2"),
        2,
        "does not match its hash",
    ),
    "edit a measurement": (
        sql("UPDATE measurements SET speedup = speedup + 0.001 WHERE evaluation_seq = 6 AND model = 'gemma4-tiny'"),
        6,
        "does not match its hash",
    ),
    "edit a frontier delta": (sql("UPDATE frontier_advances SET delta = 0.5 WHERE seq = 4"), 4, "does not match"),
    "delete a measurement": (
        sql("DELETE FROM measurements WHERE evaluation_seq = 3 AND model = 'gemma4-tiny'"),
        3,
        "does not match its hash",
    ),
    "insert a measurement": (sql(_measurement(3)), 3, "does not match its hash"),
    "insert a measurement under an advance": (sql(_measurement(4)), 4, "not an evaluation entry"),
    "insert a measurement past the end": (sql(_measurement(50)), 50, "not an evaluation entry"),
    "delete an evaluation row": (
        sql("DELETE FROM measurements WHERE evaluation_seq = 5", "DELETE FROM evaluations WHERE seq = 5"),
        5,
        "lost its evaluation row",
    ),
    "delete an entry in the middle": (lambda c, _: _delete_entry(c, 2), 2, "entry 2 is missing"),
    "delete the last entry": (lambda c, _: _delete_entry(c, LAST), LAST, "chain head says 8 entries, the chain has 7"),
    "delete the last entry and roll the head back": (
        lambda c, _: (
            _delete_entry(c, LAST),
            c.execute(
                text("UPDATE chain_head SET seq = 7, entry_hash = (SELECT entry_hash FROM entries WHERE seq = 7)")
            ),
        ),
        7,
        "bad signature on the chain head",
    ),
    "delete every row": (
        sql(*(f"DELETE FROM {t}" for t in ("measurements", "evaluations", "frontier_advances", "entries"))),
        1,
        "chain head says 8 entries, the chain has 0",
    ),
    "delete the chain head": (sql("DELETE FROM chain_head"), LAST + 1, "chain head row is missing"),
    "swap two commits between rows": (
        sql(
            f"UPDATE evaluations SET commit_sha = CASE seq WHEN 1 THEN '{sha(2)}' ELSE '{sha(1)}' END "
            "WHERE seq IN (1, 2)"
        ),
        1,
        "does not match its hash",
    ),
    "reorder two entries": (lambda c, _: _swap_entries(c, 1, 2), 1, "does not link to the entry before it"),
    "reorder an evaluation and an advance": (lambda c, _: _swap_entries(c, 3, 4), 3, "does not link"),
    "insert a replayed entry in the middle": (_insert_replayed_entry, 5, "does not link to the entry before it"),
    "move an evaluation onto an advance's entry": (
        sql("UPDATE entries SET kind = 'frontier_advance' WHERE seq = 2"),
        2,
        "also has a row in the other record table",
    ),
    "insert an evaluation no entry vouches for": (
        sql(
            "INSERT INTO evaluations SELECT 99, repo, pr, commit_sha, 'mallory', base_commit, frontier_commit, gpu, "
            "gpu_class, basket, evalbot_version, policy_hash, started_at, finished_at, status, 'XL', reasons, "
            "verdict FROM evaluations WHERE seq = 1"
        ),
        99,
        "evaluations row 99 has no evaluation entry",
    ),
    "copy another entry's signature": (
        sql("UPDATE entries SET signature = (SELECT signature FROM entries WHERE seq = 1) WHERE seq = 3"),
        3,
        "bad signature",
    ),
    "edit a label and fix the content hash": (
        lambda c, ctx: _rehash_edited_label(c, ctx, resign_entry=False),
        5,
        "chain fields do not match its hash",
    ),
    "edit a label and fix both hashes": (
        lambda c, ctx: _rehash_edited_label(c, ctx, resign_entry=True),
        5,
        "bad signature",
    ),
    "replace the stored public key": (
        lambda c, ctx: c.execute(
            text("UPDATE signing_keys SET public_key = :k"), {"k": new_signer(ctx.tmp_path, "m.key").public_hex}
        ),
        0,
        "stored public key does not match its id",
    ),
}


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


def tamper(url: str, change: Callable[[Connection], object]) -> None:
    """Run ``change`` as an outsider would: a plain engine, append-only triggers switched off."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
                for name in list(triggers):
                    conn.execute(text(f"DROP TRIGGER {name}"))
            else:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            change(conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize("case", list(CASES))
def test_verify_reports_the_first_broken_entry(case: str, url: str, tmp_path: Path) -> None:
    change, expected_seq, expected_message = CASES[case]
    ctx = Ctx(url, new_signer(tmp_path), tmp_path)
    with populated(url, ctx.signer) as ledger:
        assert ledger.verify().ok and ledger.head()[0] == LAST
    tamper(url, lambda conn: change(conn, ctx))
    with Ledger.open(url) as ledger:
        report = ledger.verify()
    assert not report.ok
    assert report.problem is not None
    assert expected_message in report.problem.message
    assert report.problem.seq == expected_seq


def test_an_intact_ledger_verifies(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with populated(url, signer) as ledger:
        report = ledger.verify([signer.public_hex])
    assert report.ok and report.entries == LAST and report.head_seq == LAST
    assert report.key_ids == (signer.key_id,)


def test_rows_appended_with_another_key_are_caught_by_pubkey(url: str, tmp_path: Path) -> None:
    """Someone with their own key can append consistently; only --pubkey tells their rows apart."""
    validator = new_signer(tmp_path)
    populated(url, validator).close()
    with Ledger.open(url, signer=new_signer(tmp_path, "mallory.key")) as forger:
        forger.record_evaluation(evaluation(40, author="mallory", label="XL"))
    with Ledger.open(url) as ledger:
        assert ledger.verify().ok  # internally consistent: the forger registered their key
        report = ledger.verify([validator.public_hex])
    assert report.problem is not None and report.problem.seq == LAST + 1
    assert "not a trusted key" in report.problem.message

    tamper(url, lambda conn: conn.execute(text("DELETE FROM signing_keys WHERE key_id != :k"), {"k": validator.key_id}))
    with Ledger.open(url) as ledger:
        report = ledger.verify()
    assert report.problem is not None and report.problem.seq == LAST + 1
    assert "not a trusted key" in report.problem.message


def test_cli_verify_exit_codes_and_pubkey_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    signer, pub = ledger_keys.generate(tmp_path / "v.key")
    populated(url, signer).close()
    good = run_cli("ledger", "verify", "--url", tmp_path / "ledger.sqlite", "--pubkey", pub)
    assert good.returncode == 0 and f"{LAST} entries verified" in good.stdout
    tamper(url, lambda conn: conn.execute(text("UPDATE evaluations SET label = 'XL' WHERE seq = 5")))
    bad = run_cli("ledger", "verify", "--url", tmp_path / "ledger.sqlite", "--pubkey", pub)
    assert bad.returncode == 1
    assert "broken at entry 5" in bad.stdout and "4 entries before it are intact" in bad.stdout
    garbage = tmp_path / "not-a-key.pub"
    garbage.write_text("hello\n")
    refused = run_cli("ledger", "verify", "--url", tmp_path / "ledger.sqlite", "--pubkey", garbage)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: {garbage}: not a PEM public key or 64 hex digits"]
