"""What one evaluation measured: build outcome, gate results, paired speed comparisons.

The harness produces these; the label policy consumes them. They round-trip through plain JSON so a
verdict can be re-scored from its recorded measurements alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.stats import PairedComparison


@dataclass(frozen=True)
class GateResult:
    name: str  # e.g. "kl_mean", "top1", "kernel:rmsnorm"
    model: str
    passed: bool
    value: float
    limit: float
    detail: str = ""


@dataclass(frozen=True)
class SpeedCell:
    model: str
    context: int
    comparison: PairedComparison
    t_frontier_s: float  # median step time of each runtime
    t_candidate_s: float
    t_roofline_s: float  # bytes that must move / measured peak bandwidth
    guard: bool = False  # a long-context guard: the regression guard applies to it, the score does not


@dataclass(frozen=True)
class Measurements:
    build_ok: bool
    build_reason: str = ""
    gates: tuple[GateResult, ...] = ()
    cells: tuple[SpeedCell, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Measurements:
        try:
            return cls(
                build_ok=bool(doc["build_ok"]),
                build_reason=str(doc.get("build_reason", "")),
                gates=tuple(GateResult(**g) for g in doc.get("gates", ())),
                cells=tuple(
                    SpeedCell(**{**c, "comparison": PairedComparison(**c["comparison"])}) for c in doc.get("cells", ())
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed measurements: {exc}") from None


@dataclass(frozen=True)
class RepeatAudit:
    """MLPerf TEST04's question: how much faster is each side on one input repeated than on fresh ones?"""
    context: int
    pairs: int
    frontier_ratio: float  # median fresh step time / median repeated step time
    candidate_ratio: float

    @property
    def excess(self) -> float:
        """How much more the candidate gains from repetition than the frontier (0: the same)."""
        return self.candidate_ratio / self.frontier_ratio - 1.0
