"""The benchmark's inputs: a fresh start position and teacher-forced tokens for every trial pair.

Pure and CPU-only, so what a validator's seed draws can be checked without a GPU. Everything is a
function of (private seed, context, draw index): another box with the same seed times the same
inputs, and a contributor without it cannot predict them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A trial starts up to this far below its cell's context (an eighth of it at short contexts): the
# attention's cost moves by at most that share, and both sides of a pair start at the same place.
BAND_MAX = 256
# The share of pairs whose logits are compared besides the last (capped): the candidate cannot tell.
CHECK_SHARE = 0.05
MAX_CHECKED_PAIRS = 8


def band(context: int) -> int:
    return min(BAND_MAX, context // 8)


@dataclass(frozen=True)
class TrialInput:
    start: int  # the first position decoded
    tokens: np.ndarray  # the teacher-forced ids of positions start .. start + len - 1


def trial_input(seed: int, index: int, context: int, steps: int, n_vocab: int) -> TrialInput:
    """The ``index``-th input of a cell: a start within :func:`band` below ``context`` and fresh
    tokens, from the validator's ``seed`` (never repeated within a cell: the index is never reused)."""
    r = np.random.default_rng([seed % (1 << 64), context, index])
    start = context - int(r.integers(0, band(context) + 1))
    return TrialInput(start, r.integers(0, n_vocab, steps).astype(np.int32))
