"""The ledger's Merkle tree: kept on every append, built for old ledgers by the migration, checked by verify.

Also the exactness of stored values: a value SQLite would decode loosely (a ``gates_passed`` of 7
reads as true) is refused by ``verify``, since it is not what the writer stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from test_ledger_support import BACKENDS, backend_url, evaluation, new_signer, populated
from test_ledger_tamper import tamper

from ledger import Ledger, merkle, schema
from ledger.engine import make_engine


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


def _leaves(ledger: Ledger) -> list[bytes]:
    with ledger.engine.connect() as conn:
        hashes = conn.execute(text("SELECT entry_hash FROM entries ORDER BY seq")).scalars().all()
    return [merkle.leaf_hash(bytes.fromhex(h)) for h in hashes]


def test_the_tree_follows_every_append_and_answers_every_size(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=9) as ledger:  # 12 entries, appended one by one
        ledger.record_evaluations([evaluation(i) for i in range(20, 27)], batch_size=3)  # and in batches
        leaves = _leaves(ledger)
        assert len(leaves) == 19
        for size in range(len(leaves) + 1):
            assert ledger.tree_root(size) == (size, merkle.root_of(leaves[:size]))
        report = ledger.verify()
        assert report.ok and report.tree_root == merkle.root_of(leaves).hex()
        for size in (1, 7, 8, 19):
            _, root = ledger.tree_root(size)
            for seq in range(1, size + 1):
                entry_hash, proof = ledger.inclusion_proof(seq, size)
                merkle.verify_inclusion(seq - 1, size, merkle.leaf_hash(bytes.fromhex(entry_hash)), proof, root)
            for old in range(1, size + 1):
                merkle.verify_consistency(
                    old, size, ledger.tree_root(old)[1], root, ledger.consistency_proof(old, size)
                )


def test_the_migration_builds_the_tree_of_an_existing_ledger(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with populated(url, signer, evaluations=9) as ledger:
        leaves = _leaves(ledger)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "0004")
        with engine.connect() as conn:
            assert "tlog_nodes" not in conn.dialect.get_table_names(conn)
        schema.upgrade(engine, url)
    finally:
        engine.dispose()
    with Ledger.open(url, signer=signer) as ledger:
        assert ledger.tree_root() == (12, merkle.root_of(leaves))
        assert ledger.verify([signer.public_hex]).ok
        ledger.record_evaluation(evaluation(50))
        assert ledger.tree_root()[1] == merkle.root_of([*leaves, *_leaves(ledger)[12:]])
        assert ledger.verify([signer.public_hex]).ok


def test_tree_nodes_are_append_only(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=3):
        pass
    engine = make_engine(url)
    try:
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text("UPDATE tlog_nodes SET hash = 'ab' WHERE level = 0 AND idx = 0"))
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM tlog_nodes"))
    finally:
        engine.dispose()


ZERO = "00" * 32
TREE_CASES = {
    "edit a leaf": (
        f"UPDATE tlog_nodes SET hash = '{ZERO}' WHERE level = 0 AND idx = 2",
        3,
        "(level 0, index 2) does not match",
    ),
    "edit an interior node": (
        f"UPDATE tlog_nodes SET hash = '{ZERO}' WHERE level = 2 AND idx = 0",
        4,
        "(level 2, index 0) does not match",
    ),
    "delete a node": ("DELETE FROM tlog_nodes WHERE level = 1 AND idx = 2", 6, "(level 1, index 2) is missing"),
    "insert a node": (f"INSERT INTO tlog_nodes VALUES (5, 0, '{ZERO}')", 9, "tlog_nodes holds 16 Merkle tree nodes"),
}


@pytest.mark.parametrize("case", list(TREE_CASES))
def test_verify_checks_every_stored_node(case: str, url: str, tmp_path: Path) -> None:
    statement, seq, message = TREE_CASES[case]
    with populated(url, new_signer(tmp_path), evaluations=6) as ledger:  # 8 entries: 15 nodes
        assert ledger.verify().ok
    tamper(url, lambda conn: conn.execute(text(statement)))
    with Ledger.open(url) as ledger:
        report = ledger.verify()
    assert report.problem is not None, case
    assert message in report.problem.message and report.problem.seq == seq, report.problem


STORED_FORM_CASES = {
    "gates_passed 7": (
        "UPDATE measurements SET gates_passed = 7 WHERE evaluation_seq = 3 AND model = 'gemma4-tiny'",
        3,
        "measurements row evaluation_seq 3, model gemma4-tiny, column gates_passed: stored 7, not 1",
    ),
    "gates_passed as text": (
        "UPDATE measurements SET gates_passed = 'yes' WHERE evaluation_seq = 2 AND model = 'gemma4-tiny'",
        2,
        "column gates_passed",
    ),
    "gates_passed 0.5": (  # (1.0 would be stored as the integer 1: the column's affinity is numeric)
        "UPDATE measurements SET gates_passed = 0.5 WHERE evaluation_seq = 2 AND model = 'gemma4-tiny'",
        2,
        "column gates_passed: stored 0.5, not 1",
    ),
    "a timestamp with a suffix": (
        "UPDATE evaluations SET finished_at = finished_at || 'Z' WHERE seq = 5",
        5,
        "evaluations row seq 5, column finished_at: stored '2025-03-01 12:04:00.123456Z'",
    ),
    "a recorded_at without microseconds": (
        "UPDATE entries SET recorded_at = substr(recorded_at, 1, 19) WHERE seq = 2",
        2,
        "entries row seq 2, column recorded_at",
    ),
}


@pytest.mark.parametrize("case", list(STORED_FORM_CASES))
def test_values_must_be_stored_exactly_as_written(case: str, tmp_path: Path) -> None:
    """SQLite keeps any value in any column; verify demands the exact form the writer stores."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    statement, seq, message = STORED_FORM_CASES[case]
    with populated(url, new_signer(tmp_path), evaluations=6) as ledger:
        assert ledger.verify().ok
    tamper(url, lambda conn: conn.execute(text(statement)))
    with Ledger.open(url) as ledger:
        report = ledger.verify()
    assert report.problem is not None, case
    assert message in report.problem.message and report.problem.seq == seq, report.problem
