"""How far one next-token distribution sequence is from another: top-1 agreement, KL, perplexity.

Pure functions over log-probability arrays [n_positions, n_vocab], in the spirit of llama.cpp's
perplexity tool's KL-divergence report. The reference is always the first argument: KL(ref ‖ cand).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


def normalize(logits: np.ndarray) -> np.ndarray:
    """Log-softmax in float64 (for logits from an implementation that returns raw scores)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_per_position(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    return np.maximum((np.exp(ref) * (ref - cand)).sum(axis=-1), 0.0)


def compare(ref: np.ndarray, cand: np.ndarray, targets: np.ndarray | None = None, margin: float = 0.25) -> Divergence:
    """Compare log-probs ``cand`` with ``ref``. ``targets[i]`` is the token that followed position i
    (for perplexity); without it perplexities are NaN."""
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValueError(f"shapes differ or are not 2-D: {ref.shape} vs {cand.shape}")
    kl = kl_per_position(ref, cand)
    top_ref = ref.argmax(axis=-1)
    agree = top_ref == cand.argmax(axis=-1)
    top2 = np.partition(ref, -2, axis=-1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > margin
    if targets is not None:
        rows = np.arange(len(targets))
        ppl_ref = float(np.exp(-ref[rows, targets].mean()))
        ppl_cand = float(np.exp(-cand[rows, targets].mean()))
    else:
        ppl_ref = ppl_cand = float("nan")
    return Divergence(
        n_positions=len(kl),
        top1_agreement=float(agree.mean()),
        kl_mean=float(kl.mean()),
        kl_p99=float(np.quantile(kl, 0.99)),
        kl_max=float(kl.max()),
        margin=margin,
        n_confident=int(confident.sum()),
        top1_agreement_confident=float(agree[confident].mean()) if confident.any() else float("nan"),
        ppl_ref=ppl_ref,
        ppl_cand=ppl_cand,
    )
