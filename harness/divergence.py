"""How far one next-token distribution sequence is from another: top-1 agreement, KL, perplexity.

Pure functions over log-probability arrays [n_positions, n_vocab], in the spirit of llama.cpp's
perplexity tool's KL-divergence report. The reference is always the first argument: KL(ref ‖ cand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Divergence:
    n_positions: int
    top1_agreement: float
    kl_mean: float
    kl_p99: float
    kl_max: float
    # Agreement only where the reference's top token leads its runner-up by more than `margin` nats:
    # elsewhere a flip is a near-tie, not an error.
    margin: float
    n_confident: int
    top1_agreement_confident: float
    ppl_ref: float
    ppl_cand: float

    @property
    def ppl_ratio(self) -> float:
        return self.ppl_cand / self.ppl_ref

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ppl_ratio": self.ppl_ratio}


def _namespace(a: Any) -> Any:
    """NumPy, or CuPy for a CuPy array (imported only then: CPU installs have no CuPy)."""
    if type(a).__module__.partition(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def normalize(logits: Any) -> Any:
    """Log-softmax in float64 (for logits from an implementation that returns raw scores)."""
    xp = _namespace(logits)
    x = xp.asarray(logits, dtype=xp.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - xp.log(xp.exp(x).sum(axis=-1, keepdims=True))


def kl_per_position(ref: Any, cand: Any) -> Any:
    xp = _namespace(cand)
    ref = xp.asarray(ref, dtype=xp.float64)
    cand = xp.asarray(cand, dtype=xp.float64)
    return xp.maximum((xp.exp(ref) * (ref - cand)).sum(axis=-1), 0.0)


@dataclass(frozen=True)
class RowStats:
    """What ``compare`` needs of each position, as host arrays: the [n, n_vocab] inputs reduced to
    [n], so positions can be compared a block at a time (on the GPU, as the logits are produced)."""

    kl: np.ndarray
    agree: np.ndarray  # the two top tokens are the same
    gap: np.ndarray  # the reference's top log-prob minus its runner-up's
    target_ref: np.ndarray  # log-prob of the token that followed (NaN without targets)
    target_cand: np.ndarray

    @staticmethod
    def concat(parts: Sequence[RowStats]) -> RowStats:
        return RowStats(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(RowStats)))


def _row_stats(ref: Any, cand: Any, targets: np.ndarray | None, raw: bool) -> RowStats:
    """Per-position statistics of log-probs ``cand`` against ``ref`` ([n, n_vocab] each, NumPy or
    CuPy; computed where ``cand`` lives, in float64). ``raw``: ``cand`` holds logits, normalized here."""
    xp = _namespace(cand)
    ref = xp.asarray(ref, dtype=xp.float64)
    cand = normalize(cand) if raw else xp.asarray(cand, dtype=xp.float64)
    rows = xp.arange(len(ref))
    top = ref.argmax(axis=-1)
    best = ref[rows, top]
    runner = ref.copy()
    runner[rows, top] = -xp.inf
    stats = [kl_per_position(ref, cand), top == cand.argmax(axis=-1), best - runner.max(axis=-1)]
    if targets is not None:
        t = xp.asarray(targets)
        stats += [ref[rows, t], cand[rows, t]]
    host = [a.get() if xp is not np else a for a in stats]
    if targets is None:
        host += [np.full(len(ref), np.nan), np.full(len(ref), np.nan)]
    return RowStats(*host)


def summarize(stats: RowStats, margin: float = 0.25) -> Divergence:
    """One report from per-position statistics; perplexities are NaN where the targets were absent."""
    kl, agree = stats.kl, stats.agree
    confident = stats.gap > margin
    return Divergence(
        n_positions=len(kl),
        top1_agreement=float(agree.mean()),
        kl_mean=float(kl.mean()),
        kl_p99=float(np.quantile(kl, 0.99)),
        kl_max=float(kl.max()),
        margin=margin,
        n_confident=int(confident.sum()),
        top1_agreement_confident=float(agree[confident].mean()) if confident.any() else float("nan"),
        ppl_ref=float(np.exp(-stats.target_ref.mean())),
        ppl_cand=float(np.exp(-stats.target_cand.mean())),
    )


# Positions per block: 128 MB of float64 per operand at Gemma's 262,144-token vocabulary, so a
# block's temporaries stay well inside the headroom ``require_fits`` leaves on the GPU.
_BLOCK_VALUES = 1 << 24


def block_stats(ref: Any, cand: Any, targets: np.ndarray | None = None, raw: bool = False) -> RowStats:
    """Per-position statistics of log-probs ``cand`` against ``ref`` ([n, n_vocab] each, NumPy or CuPy;
    computed where ``cand`` lives, in float64), a block of positions at a time: memory bounded whatever
    the vocabulary. ``raw``: ``cand`` holds logits, normalized here."""
    if ref.shape != cand.shape or len(ref.shape) != 2:
        raise ValueError(f"shapes differ or are not 2-D: {ref.shape} vs {cand.shape}")
    block = max(1, _BLOCK_VALUES // max(1, ref.shape[1]))
    return RowStats.concat([_row_stats(ref[i : i + block], cand[i : i + block],
                                       None if targets is None else targets[i : i + block], raw)
                            for i in range(0, ref.shape[0], block)])


def compare(ref: Any, cand: Any, targets: np.ndarray | None = None, margin: float = 0.25,
            raw: bool = False) -> Divergence:
    """Compare log-probs ``cand`` with ``ref``. ``targets[i]`` is the token that followed position i
    (for perplexity); without it perplexities are NaN. NumPy or CuPy (computed where ``cand`` lives);
    ``raw``: ``cand`` holds logits, normalized a block at a time, never whole in float64."""
    return summarize(block_stats(ref, cand, targets, raw), margin)
