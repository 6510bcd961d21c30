"""Calibration: gate limits from the noise floor between correct implementations.

The baseline runtime is a correct implementation; its distance from the fp64 reference (per model,
per run) and its kernels' errors against the fp64 slot math (per slot, over shapes) are the noise
floor. A proposed limit sits ``margin`` times further out than the worst observation, so a correct
kernel with a different summation order passes and a wrong one (whose errors are orders of
magnitude larger) does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.divergence import Divergence
from harness.gates import GateLimits

TINY = 1e-9  # floor for a limit whose observed noise is exactly zero


@dataclass(frozen=True)
class NoiseFloor:
    n_observations: int
    top1_min: float
    kl_mean_max: float
    kl_p99_max: float
    kl_max_max: float
    ppl_ratio_max: float  # worst |ppl_cand / ppl_ref - 1| expressed as 1 + that


def noise_floor(observations: Sequence[Divergence]) -> NoiseFloor:
    if not observations:
        raise ValueError("no observations to calibrate from")
    return NoiseFloor(
        n_observations=len(observations),
        top1_min=min(d.top1_agreement for d in observations),
        kl_mean_max=max(d.kl_mean for d in observations),
        kl_p99_max=max(d.kl_p99 for d in observations),
        kl_max_max=max(d.kl_max for d in observations),
        ppl_ratio_max=1.0 + max(abs(d.ppl_ratio - 1.0) for d in observations),
    )


def propose_limits(floor: NoiseFloor, margin: float) -> GateLimits:
    """Each limit ``margin`` times the observed noise away from perfect (agreement 1, KL 0, ratio 1)."""
    if margin < 1:
        raise ValueError(f"margin must be at least 1, got {margin}")
    return GateLimits(
        top1_min=max(0.0, 1.0 - margin * max(1.0 - floor.top1_min, TINY)),
        kl_mean_max=margin * max(floor.kl_mean_max, TINY),
        kl_p99_max=margin * max(floor.kl_p99_max, TINY),
        kl_max_max=margin * max(floor.kl_max_max, TINY),
        ppl_ratio_max=1.0 + margin * max(floor.ppl_ratio_max - 1.0, TINY),
    )


def propose_kernel_tolerances(errors: Iterable[tuple[str, float]], families: Mapping[str, str],
                              margin: float) -> dict[str, float]:
    """Per tolerance family, ``margin`` × the worst relative error any baseline kernel of that family
    showed. ``errors`` are (slot, error); ``families`` maps each slot to its policy key. Families
    that are exact (dequantizing lookups) stay 0."""
    worst: dict[str, float] = {}
    for slot, err in errors:
        family = families[slot]
        worst[family] = max(worst.get(family, 0.0), err)
    return {family: (0.0 if value == 0.0 else margin * value) for family, value in sorted(worst.items())}
