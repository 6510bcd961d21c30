"""End-to-end gates: one model's teacher-forced decode against the fp64 reference, as pass/fail results.

The limits are plain numbers handed in by the caller (the policy file owns them); these functions
only compare. Every gate reports its value and limit, so a REJECT says by how much it missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.divergence import Divergence
from harness.measurements import GateResult, RepeatAudit


@dataclass(frozen=True)
class GateLimits:
    top1_min: float
    kl_mean_max: float
    kl_p99_max: float
    kl_max_max: float
    ppl_ratio_max: float


def end_to_end(model: str, d: Divergence, limits: GateLimits) -> tuple[GateResult, ...]:
    """Top-1 agreement, KL(reference ‖ candidate) mean / p99 / max and the perplexity ratio. A NaN
    anywhere (a kernel that wrote garbage) fails the gate it lands in."""
    where = f"{d.n_positions} teacher-forced positions of the frozen corpus"

    def at_most(name: str, value: float, limit: float) -> GateResult:
        return GateResult(name, model, bool(math.isfinite(value) and value <= limit), value, limit, where)

    return (
        GateResult("top1", model, bool(d.top1_agreement >= limits.top1_min), d.top1_agreement, limits.top1_min, where),
        at_most("kl_mean", d.kl_mean, limits.kl_mean_max),
        at_most("kl_p99", d.kl_p99, limits.kl_p99_max),
        at_most("kl_max", d.kl_max, limits.kl_max_max),
        at_most("ppl_ratio", d.ppl_ratio, limits.ppl_ratio_max),
    )


def spot_check(model: str, context: int, d: Divergence, limits: GateLimits) -> GateResult:
    """The benchmark's own steps: candidate vs frontier on identical inputs must agree as closely as a
    correct kernel agrees with the reference (mean KL under the end-to-end limit)."""
    ok = math.isfinite(d.kl_mean) and d.kl_mean <= limits.kl_mean_max
    return GateResult(f"benchmark_spot_check@{context}", model, bool(ok), d.kl_mean, limits.kl_mean_max,
                      f"KL(frontier ‖ candidate) over the {d.n_positions} timed steps at context {context}; "
                      f"top-1 agreement {d.top1_agreement:.4f}")


def repeat_audit(model: str, audit: RepeatAudit, margin: float) -> GateResult:
    """A candidate that gains more from one input repeated than the frontier does (by more than
    ``margin``) is fast on what the benchmark would otherwise repeat, not on what decode sees."""
    ok = math.isfinite(audit.excess) and audit.excess <= margin
    return GateResult("audit:repeat", model, bool(ok), audit.excess, margin,
                      f"at context {audit.context}, {audit.pairs} pairs: one input repeated runs "
                      f"{audit.candidate_ratio:.3f}x as fast as fresh inputs for the candidate, "
                      f"{audit.frontier_ratio:.3f}x for the frontier")


def kv_integrity(model: str, context: int, intact: bool) -> GateResult:
    """The KV history below the benchmarked context must be untouched by the trials."""
    return GateResult(f"benchmark_kv_integrity@{context}", model, intact, 0.0 if intact else 1.0, 0.0,
                      f"KV cache rows below position {context} " + ("unchanged" if intact else "were overwritten"))
