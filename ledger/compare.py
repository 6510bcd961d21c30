"""Two validators' ledgers side by side: for commits both evaluated, do they agree?

SN74's reward needs independent validators to converge on the same label for the same commit. For
every commit with a completed evaluation in both ledgers (the newest one of each), this counts
label agreement, lists the disagreements, and sums up each basket model's speedup difference
(A − B, in percentage points of speedup): its mean (a bias between the two machines) and its mean
and largest absolute value (the noise between them).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from ledger.api import Ledger
from ledger.models import Evaluation, Measurement
from ledger.records import STATUS_COMPLETE

_STREAM_ROWS = 10_000


@dataclass(frozen=True)
class Verdict:
    seq: int
    label: str | None
    gpu_class: str
    speedups: dict[str, float | None] = field(default_factory=dict)


def latest_verdicts(ledger: Ledger) -> dict[str, Verdict]:
    """commit → its newest completed evaluation in ``ledger`` (streamed, one pass each table)."""
    found: dict[str, Verdict] = {}
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(Evaluation.seq, Evaluation.commit_sha, Evaluation.label, Evaluation.gpu_class)
            .where(Evaluation.status == STATUS_COMPLETE)
            .order_by(Evaluation.seq)
            .execution_options(yield_per=_STREAM_ROWS)
        )
        for row in rows:
            found[row.commit_sha] = Verdict(row.seq, row.label, row.gpu_class)
        wanted = {v.seq: v for v in found.values()}
        for m in conn.execute(
            select(Measurement.evaluation_seq, Measurement.model, Measurement.speedup).execution_options(
                yield_per=_STREAM_ROWS
            )
        ):
            if (verdict := wanted.get(m.evaluation_seq)) is not None:
                verdict.speedups[m.model] = m.speedup
    return found


@dataclass(frozen=True)
class ModelDifference:
    model: str
    pairs: int
    mean: float  # A − B, percentage points
    mean_abs: float
    max_abs: float


@dataclass(frozen=True)
class Comparison:
    only_a: int
    only_b: int
    both: int
    agree: int
    disagreements: list[tuple[str, str | None, str | None]]  # (commit, label A, label B)
    models: list[ModelDifference]

    @property
    def agreement(self) -> float | None:
        return None if self.both == 0 else self.agree / self.both


def _differences(pairs: Iterable[tuple[str, float, float]]) -> list[ModelDifference]:
    by_model: dict[str, list[float]] = {}
    for model, a, b in pairs:
        by_model.setdefault(model, []).append(100 * (a - b))
    return [
        ModelDifference(m, len(d), statistics.fmean(d), statistics.fmean(abs(x) for x in d), max(abs(x) for x in d))
        for m, d in sorted(by_model.items())
    ]


def compare(a: dict[str, Verdict], b: dict[str, Verdict]) -> Comparison:
    common = sorted(a.keys() & b.keys(), key=lambda c: a[c].seq)
    disagreements = [(c, a[c].label, b[c].label) for c in common if a[c].label != b[c].label]
    pairs = [
        (model, sa, sb)
        for c in common
        for model, sa in a[c].speedups.items()
        if sa is not None and (sb := b[c].speedups.get(model)) is not None
    ]
    return Comparison(
        only_a=len(a.keys() - b.keys()),
        only_b=len(b.keys() - a.keys()),
        both=len(common),
        agree=len(common) - len(disagreements),
        disagreements=disagreements,
        models=_differences(pairs),
    )
