"""The merge queue: current wins ranked by label, score and speedup; stale ones below; the file round-trips."""

from __future__ import annotations

import pytest

from evalbot import ranking

LIVE = "f" * 40


def verdict(label: str, score: float | None, speedup: float, against: str = LIVE, rebase: tuple = ()) -> dict:
    doc = {"score": score, "details": {"needs_rebase": list(rebase)}} if score is not None else {}
    return {"label": label, "baseline_sha": against, "document": doc,
            "models": [{"model": "a", "speedup": speedup}, {"model": "b", "speedup": speedup + 0.01}]}


def test_current_wins_rank_by_label_then_score_and_stale_ones_go_below():
    got = [ranking.candidate(n, f"{n:040x}", f"u{n}", v, LIVE) for n, v in [
        (1, verdict("S", 0.07, 1.04)), (2, verdict("M", 0.12, 1.07)), (3, verdict("M", 0.15, 1.08)),
        (4, verdict("XL", 0.40, 1.3, against="e" * 40)), (5, verdict("none", 0.0, 1.0)),
        (6, verdict("REJECT", None, 0.9)), (7, verdict("S", None, 1.05, rebase=()))]]
    ranked = ranking.rank(c for c in got if c is not None)
    # M by score, then S: a scored verdict before one without a score; XL #4 was measured against an
    # older frontier, so it waits below.
    assert [c.pr for c in ranked] == [3, 2, 1, 7, 4]
    assert ranked[-1].current is False and ranked[0].speedup == 1.08
    assert ranking.candidate(5, "x", "u", verdict("none", 0.0, 1.0), LIVE) is None


def test_the_file_round_trips_and_a_damaged_one_is_named(tmp_path):
    c = ranking.candidate(9, "a" * 40, "alice", verdict("M", 0.12, 1.07, rebase=("gemv_q4_k",)), LIVE)
    assert c is not None and c.needs_rebase == ("gemv_q4_k",)
    ranking.write(tmp_path, LIVE, [c])
    when, frontier, queue = ranking.read(tmp_path)
    assert frontier == LIVE and queue == [c] and when
    (tmp_path / ranking.FILE_NAME).write_text('{"queue": [{"pr": 1}]}')
    with pytest.raises(ValueError, match="not a merge queue"):
        ranking.read(tmp_path)
    with pytest.raises(FileNotFoundError):
        ranking.read(tmp_path / "nowhere")
