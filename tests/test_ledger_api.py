"""The ledger's Python API on SQLite and PostgreSQL: what goes in comes back, queries, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from test_ledger_support import BACKENDS, T0, advance, backend_url, evaluation, new_signer, populated, sha

from ledger import (
    AppendOnlyError,
    Evaluation,
    FrontierConflictError,
    Ledger,
    LedgerError,
    LedgerInputError,
    LedgerOpenError,
    Measurement,
)
from ledger import keys as ledger_keys


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


def test_recorded_evaluation_reads_back_exactly(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    given = evaluation(7, label="M")
    with Ledger.open(url, signer=signer, create=True) as ledger:
        stored = ledger.record_evaluation(given)
        (found,) = ledger.find(given.commit_sha[:8])
    for row in (stored, found):
        assert row.seq == 1
        assert (row.repo, row.pr, row.commit_sha, row.author, row.label) == (
            "sn74/kernels",
            107,
            given.commit_sha,
            "alice",
            "M",
        )
        assert row.started_at == given.started_at and row.finished_at == given.finished_at
        assert row.finished_at.utcoffset() == timedelta(0)
        assert json.loads(row.verdict) == given.verdict
        assert json.loads(row.reasons) == list(given.reasons)
        assert [m.model for m in row.measurements] == ["gemma4-tiny", "qwen3moe-tiny"]
        qwen = row.measurements[1]
        assert (qwen.tokens_per_s, qwen.speedup, qwen.gates_passed) == (1007.0, 1.07, True)
        assert row.entry.key_id == signer.key_id and len(row.entry.signature) == 128


def test_queries_filter_and_order(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=9) as ledger:
        assert ledger.count() == 9
        everyone = ledger.history()
        assert [e.finished_at for e in everyone] == sorted((e.finished_at for e in everyone), reverse=True)
        bob = ledger.history(author="bob")
        assert {e.author for e in bob} == {"bob"} and len(bob) == 4
        since = ledger.history(since=T0 + timedelta(minutes=7))
        assert sorted(json.loads(e.verdict)["n"] for e in since) == [7, 8, 9]
        assert len(ledger.history(limit=2)) == 2
        assert ledger.find(sha(5))[0].pr == 105
        assert ledger.find("0000") == []


def test_frontier_current_and_history(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=9) as ledger:
        history = ledger.frontier_history()
        assert [a.commit_sha for a in history] == [sha(i, "advance") for i in (3, 6, 9)]
        assert history[1].previous_commit == history[0].commit_sha
        current = ledger.frontier("default", "h100")
        assert current is not None and current.commit_sha == sha(9, "advance")
        assert json.loads(current.model_deltas) == {"qwen3moe-tiny": 0.05, "gemma4-tiny": 0.025}
        assert ledger.frontier("default", "b200") is None
        other = dataclasses.replace(advance(1, None), gpu_class="b200")
        ledger.record_frontier_advance(other)
        assert {(f.gpu_class, f.commit_sha) for f in ledger.frontiers()} == {
            ("h100", sha(9, "advance")),
            ("b200", sha(1, "advance")),
        }
        assert ledger.verify().ok


def test_frontier_advance_against_a_stale_frontier_is_refused(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=3) as ledger:
        before = ledger.head()
        stale = advance(4, None)  # measured as if there were no frontier yet
        with pytest.raises(FrontierConflictError, match="re-measure"):
            ledger.record_frontier_advance(stale)
        with pytest.raises(LedgerInputError, match="entry 999 is not an evaluation"):
            ledger.record_frontier_advance(advance(4, sha(3, "advance"), evaluation_seq=999))
        assert ledger.head() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "HUGE"}, "label: must be one of"),
        ({"status": "error"}, "has no label"),
        ({"status": "maybe"}, "status: must be one of"),
        ({"commit_sha": "abc"}, "commit_sha: expected a full lowercase hex commit id"),
        ({"finished_at": datetime(2025, 3, 1, 12, 0)}, "finished_at: timestamp has no time zone"),
        ({"started_at": T0 + timedelta(days=1)}, "is before started_at"),
        ({"verdict": {"x": math.nan}}, "verdict: not a JSON document"),
        ({"verdict": "{not json"}, "verdict: not a JSON document"),
        ({"author": ""}, "author: expected a non-empty string"),
        ({"pr": 0}, "pr: expected a positive pull-request number"),
        ({"gpu_class": "x" * 101}, "gpu_class: longer than 100"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(change: dict[str, object], message: str, tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}", signer=new_signer(tmp_path), create=True) as ledger:
        with pytest.raises(LedgerInputError, match=message):
            ledger.record_evaluation(dataclasses.replace(evaluation(1), **change))  # type: ignore[arg-type]
        assert ledger.count() == 0


def test_nan_measurement_is_refused(tmp_path: Path) -> None:
    bad = dataclasses.replace(evaluation(1).measurements[0], speedup=math.inf)
    with Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}", signer=new_signer(tmp_path), create=True) as ledger:
        with pytest.raises(LedgerInputError, match="qwen3moe-tiny: speedup: expected a finite number"):
            ledger.record_evaluation(dataclasses.replace(evaluation(1), measurements=[bad]))


def test_appending_needs_a_signing_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    Ledger.open(url, create=True).close()
    with Ledger.open(url) as reader, pytest.raises(LedgerError, match="no signing key loaded"):
        reader.record_evaluation(evaluation(1))


def test_open_refuses_a_missing_file_unless_creating(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ledger.sqlite"
    with pytest.raises(LedgerOpenError, match=f"{missing}: no ledger here"):
        Ledger.open(f"sqlite:///{missing}")
    assert not missing.exists()


def test_orm_changes_to_chained_rows_are_refused(url: str, tmp_path: Path) -> None:
    with populated(url, new_signer(tmp_path), evaluations=2) as ledger:
        with Session(ledger.engine) as session:
            row = session.get(Evaluation, 1)
            assert row is not None
            row.label = "XL"
            with pytest.raises(AppendOnlyError, match="append-only"):
                session.commit()
        with Session(ledger.engine) as session:
            measurement = session.get(Measurement, (1, "gemma4-tiny"))
            session.delete(measurement)
            with pytest.raises(AppendOnlyError, match="append-only"):
                session.commit()
        with Session(ledger.engine) as session, pytest.raises(AppendOnlyError, match="UPDATE on evaluations"):
            session.execute(update(Evaluation).values(label="XL"))
        assert {e.label for e in ledger.history()} == {"S"}
        assert ledger.verify().ok


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE evaluations SET label = 'XL'",
        "DELETE FROM measurements",
        "UPDATE entries SET signature = 'x'",
        "DELETE FROM entries WHERE seq = 2",
        "DELETE FROM signing_keys",
        "UPDATE chain_head SET seq = 1",
    ],
)
def test_the_database_itself_refuses_edits(url: str, tmp_path: Path, statement: str) -> None:
    """Plain SQL that bypasses the API hits the triggers the migration created."""
    with populated(url, new_signer(tmp_path), evaluations=3) as ledger:
        with pytest.raises(DBAPIError, match=r"append-only|only moves forward"):
            with ledger.engine.begin() as conn:
                conn.execute(text(statement))
        assert ledger.count() == 3
        assert ledger.verify().ok


def test_verify_against_the_right_and_a_wrong_public_key(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    stranger = new_signer(tmp_path, "stranger.key")
    with populated(url, signer, evaluations=3) as ledger:
        assert ledger.verify([signer.public_hex]).ok
        report = ledger.verify([stranger.public_hex])
        assert not report.ok
        assert report.problem is not None and report.problem.seq == 1
        assert f"signed by key {signer.key_id}, which is not a trusted key" in report.problem.message
        assert ledger_keys.key_id_of(signer.public_hex) == signer.key_id


def test_two_keys_in_one_ledger_both_verify(url: str, tmp_path: Path) -> None:
    """Key rotation: entries keep the key they were signed with."""
    first, second = new_signer(tmp_path, "a.key"), new_signer(tmp_path, "b.key")
    populated(url, first, evaluations=2).close()
    with Ledger.open(url, signer=second) as ledger:
        ledger.record_evaluation(evaluation(3))
        assert ledger.verify().ok
        assert ledger.verify([first.public_hex, second.public_hex]).ok
        only_first = ledger.verify([first.public_hex])
        assert only_first.problem is not None and only_first.problem.seq == 3


def test_recording_once_is_safe_to_retry(url: str, tmp_path: Path) -> None:
    """A caller that crashed after appending and before noting it records again: no second row."""
    with populated(url, new_signer(tmp_path), evaluations=3) as ledger:
        first = ledger.record_evaluation(evaluation(10), once=True)
        again = ledger.record_evaluation(evaluation(10), once=True)
        assert again.seq == first.seq and ledger.count() == 4
        # A different verdict on the same commit (here: a failed run, then a real one) is new.
        failed = dataclasses.replace(evaluation(11), status="error", label=None, measurements=[])
        errored = ledger.record_evaluation(failed, once=True)
        assert ledger.record_evaluation(evaluation(11), once=True).seq == errored.seq + 1
        assert ledger.record_evaluation(evaluation(10)).seq == errored.seq + 2  # without once: appended

        step = advance(20, sha(3, "advance"), evaluation_seq=first.seq)
        moved = ledger.record_frontier_advance(step, once=True)
        assert ledger.record_frontier_advance(step, once=True).seq == moved.seq
        with pytest.raises(FrontierConflictError):
            ledger.record_frontier_advance(step)  # without once, the stale previous frontier is an error
        with pytest.raises(FrontierConflictError):  # same commit, different numbers: not a retry
            ledger.record_frontier_advance(dataclasses.replace(step, delta=0.2), once=True)
        assert [a.commit_sha for a in ledger.frontier_history()] == [sha(3, "advance"), sha(20, "advance")]
        assert ledger.verify().ok
