"""Statistics of interleaved (ABAB…) benchmark trials: is the candidate faster than the frontier?

Each trial pairs one frontier timing with the candidate timing taken right after it on the same GPU,
so slow drift (clocks, temperature, other tenants) cancels in the pair's ratio. Everything is done on
log-ratios ``log(t_frontier / t_candidate)`` — positive when the candidate is faster — whose median is
robust to the occasional preempted trial and whose sign test is symmetric in the two runtimes.

Pure functions over arrays, returning named results, deterministic for given data (the bootstrap's
random stream is seeded), so two validators holding the same timings compute the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

# Normal quantiles used to turn an interval half-width into a minimum detectable effect at 80 % power.
_Z_POWER = float(stats.norm.ppf(0.80))


@dataclass(frozen=True)
class PairedComparison:
    n_pairs: int
    speedup: float  # median of t_frontier / t_candidate (> 1: the candidate is faster)
    ci_low: float  # bootstrap confidence interval of that median
    ci_high: float
    confidence: float
    p_value: float  # of "no difference": Wilcoxon signed-rank; with blocks, the two-stage bootstrap's
    mde: float  # relative effect this run could detect with 80 % power at this confidence
    spread: float  # median absolute deviation of the log-ratios (pair-to-pair noise)

    @property
    def halfwidth(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_ratios(frontier_s: np.ndarray, candidate_s: np.ndarray) -> np.ndarray:
    frontier_s = np.asarray(frontier_s, dtype=np.float64)
    candidate_s = np.asarray(candidate_s, dtype=np.float64)
    if frontier_s.shape != candidate_s.shape or frontier_s.ndim != 1:
        raise ValueError(f"paired timings must be equal-length 1-D arrays: {frontier_s.shape}, {candidate_s.shape}")
    if not (np.all(frontier_s > 0) and np.all(candidate_s > 0)):
        raise ValueError("timings must be positive")
    return np.log(frontier_s / candidate_s)


def median_halfwidth_estimate(x: np.ndarray, confidence: float) -> float:
    """Cheap normal-theory half-width of the median of ``x`` (log scale), for deciding when to stop."""
    if len(x) < 3:
        return math.inf
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    # Asymptotic standard error of a median: 1.2533 sigma / sqrt(n), sigma estimated robustly.
    sigma = 1.4826 * float(stats.median_abs_deviation(x))
    return z * 1.2533 * sigma / math.sqrt(len(x))


def block_medians(x: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    return np.array([np.median(x[blocks == b]) for b in np.unique(blocks)])


def _block_bootstrap(x: np.ndarray, blocks: np.ndarray, confidence: float, n_resamples: int,
                     rng: np.random.Generator) -> tuple[float, float, float]:
    """Percentile interval of the median under a two-stage bootstrap: resample the blocks, then the
    pairs within each chosen block, so a difference between blocks widens the interval. Also the
    two-sided bootstrap p-value of "median 0", consistent with that interval."""
    groups = [x[blocks == b] for b in np.unique(blocks)]
    medians = np.empty(n_resamples)
    for r in range(n_resamples):
        chosen = rng.integers(0, len(groups), len(groups))
        medians[r] = np.median(np.concatenate([groups[i][rng.integers(0, len(groups[i]), len(groups[i]))]
                                               for i in chosen]))
    tail = (1 - confidence) / 2
    p = 2 * min(float(np.mean(medians <= 0)), float(np.mean(medians >= 0)))
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail)), min(1.0, max(p, 1 / n_resamples))


def compare_paired(frontier_s: np.ndarray, candidate_s: np.ndarray, confidence: float = 0.95,
                   n_resamples: int = 4000, seed: int = 0, blocks: np.ndarray | None = None) -> PairedComparison:
    """``blocks[i]`` names the block of pair i (pairs taken between two re-captures of the graphs):
    with blocks, the interval also covers how much the blocks disagree."""
    x = log_ratios(frontier_s, candidate_s)
    if len(x) < 5:
        raise ValueError(f"need at least 5 paired trials, got {len(x)}")
    rng = np.random.default_rng(seed)
    if blocks is not None and np.shape(blocks) != x.shape:
        raise ValueError(f"blocks {np.shape(blocks)} do not match the pairs {x.shape}")
    p_value: float | None = None
    if blocks is not None and len(np.unique(blocks)) > 1:
        lo, hi, p_value = _block_bootstrap(x, np.asarray(blocks), confidence, n_resamples, rng)
    else:
        boot = stats.bootstrap((x,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                               method="percentile", rng=rng)
        lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    if p_value is None:
        p_value = 1.0 if np.all(x == 0) else float(stats.wilcoxon(x, zero_method="zsplit").pvalue)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    mde_log = (hi - lo) / 2.0 * (1.0 + _Z_POWER / z)
    return PairedComparison(
        n_pairs=len(x),
        speedup=math.exp(float(np.median(x))),
        ci_low=math.exp(lo),
        ci_high=math.exp(hi),
        confidence=confidence,
        p_value=p_value,
        mde=math.expm1(mde_log),
        spread=float(stats.median_abs_deviation(x)),
    )


@dataclass(frozen=True)
class SamplingRule:
    """When to stop adding interleaved trials: the interval is tight enough, or the budget is spent."""

    target_halfwidth: float = 0.0025  # relative (0.25 %): resolves ~0.5 % effects
    confidence: float = 0.95
    min_pairs: int = 20
    max_pairs: int = 5000
    budget_s: float = 60.0
    block_pairs: int = 10  # pairs between two re-captures of the graphs

    def done(self, frontier_s: np.ndarray, candidate_s: np.ndarray, elapsed_s: float,
             blocks: np.ndarray | None = None) -> bool:
        n = len(frontier_s)
        if n < self.min_pairs:
            return elapsed_s >= self.budget_s
        if n >= self.max_pairs or elapsed_s >= self.budget_s:
            return True
        x = log_ratios(frontier_s, candidate_s)
        halfwidth = median_halfwidth_estimate(x, self.confidence)
        if blocks is not None and len(np.unique(blocks)) > 1:
            per_block = block_medians(x, np.asarray(blocks))
            z = float(stats.norm.ppf(0.5 + self.confidence / 2))
            halfwidth = max(halfwidth, z * float(np.std(per_block, ddof=1)) / math.sqrt(len(per_block)))
        return math.expm1(halfwidth) <= self.target_halfwidth
