"""The long-context probe: the baseline runtime's last few steps after ≥ 16k positions of history,
against the fp64 reference at the same positions.

The frozen corpus gives 2,396 teacher-forced positions, so the end-to-end gates never see the KV
cache past that. Here the corpus is cycled out to ``n_positions``, the runtime decodes all of it
(one graph replay per token), and the reference computes the whole prefix in float64 but
projects only the probed positions through the output head: a 16k x 262,144 float64 logit matrix
would need 34 GB. A report for `evalbot calibrate`, not a gate: it costs a 16k-step decode
(~2 minutes on the production models) that no evaluation should pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.divergence import Divergence, compare


def probe_tokens(corpus_tokens: np.ndarray, n_positions: int) -> np.ndarray:
    """``n_positions`` tokens: the corpus, repeated as often as needed."""
    if n_positions < 1 or len(corpus_tokens) == 0:
        raise ValueError(f"need a corpus and n_positions >= 1, got {len(corpus_tokens)} tokens, {n_positions}")
    return np.resize(np.asarray(corpus_tokens, dtype=np.int64), n_positions)


def probe_positions(n_positions: int, steps: int) -> np.ndarray:
    """The last ``steps`` positions: the longest history the probe has."""
    if not 1 <= steps <= n_positions:
        raise ValueError(f"steps must lie in [1, {n_positions}], got {steps}")
    return np.arange(n_positions - steps, n_positions)


@dataclass(frozen=True)
class ProbeSpec:
    model: Path
    n_positions: int = 16384
    steps: int = 8


@dataclass(frozen=True)
class ProbeResult:
    n_positions: int
    positions: tuple[int, ...]
    divergence: Divergence
    reference_s: float
    decode_s: float


def run_probe(spec: ProbeSpec) -> ProbeResult:
    """One model's probe, on the GPU: a picklable job for the fault-containing worker."""
    import time

    import cupy

    from reference_runtime import corpus
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.reference import Forward
    from reference_runtime.runtime.decode import DecodeRuntime
    from reference_runtime.runtime.device import DeviceModel

    with GGUFModel.open(spec.model) as model:
        tokens = probe_tokens(corpus.for_model(model).tokens, spec.n_positions)
        at = probe_positions(spec.n_positions, spec.steps)
        t0 = time.monotonic()
        ref = Forward(model, cupy).logprobs(tokens, at=at).get()
        reference_s = time.monotonic() - t0
        cupy.get_default_memory_pool().free_all_blocks()
        runtime = DecodeRuntime(DeviceModel(model), n_ctx=spec.n_positions)
        t0 = time.monotonic()
        rows = [block[lo - start : hi - start].get() for start, block in runtime.teacher_forced_blocks(tokens)
                if (lo := max(int(at[0]), start)) < (hi := min(int(at[-1]) + 1, start + len(block)))]
        decode_s = time.monotonic() - t0
    targets = np.append(tokens[1:], tokens[0])[at]
    d = compare(ref, np.concatenate(rows), targets, raw=True)
    return ProbeResult(spec.n_positions, tuple(int(p) for p in at), d, reference_s, decode_s)
