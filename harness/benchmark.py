"""Interleaved decode benchmark: the frontier and the candidate runtime, in one process, on one GPU.

A *trial* times ``steps`` consecutive graph replays of one runtime from position ``context`` with
CUDA events. Trials come in pairs, the order alternating (FC, CF, FC, …) so a drift within a pair
favours neither side, and pairs come in blocks, both graphs captured afresh before each block; the
sampling rule decides when enough blocks are in.

Both runtimes decode the same teacher-forced token sequence over the same (random, seeded) KV
contents, so their logits at every timed step must agree: the last trial's logits of the two are
compared (the spot check), and a kernel that is fast only when nobody looks is caught.

The candidate should share the frontier's stream and working memory (``DecodeRuntime(...,
share_from=frontier)``: KV cache, activations, scratch). On an H200, two runtimes with identical
kernels but their own buffers measured 1–3 % apart run after run (the basket's working sets sit near
the size of L2, so placement matters), and with their own streams up to 4.5 % apart; sharing makes
the two launch sequences differ only in their kernels. Every step writes its activations before
reading them and appends its own KV row; the rows below ``context`` must never change, which is
checked after the trials, so a candidate cannot rewrite the shared history to make the frontier's
answers match its shortcuts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cupy
import numpy as np

from harness.divergence import Divergence, compare, normalize
from harness.stats import PairedComparison, SamplingRule, compare_paired
from reference_runtime.runtime.decode import DecodeRuntime


@dataclass(frozen=True)
class ContextRun:
    context: int
    steps_per_trial: int
    frontier_s: tuple[float, ...]  # per-step seconds of each trial
    candidate_s: tuple[float, ...]
    blocks: tuple[int, ...]  # the block of each pair (graphs re-captured between blocks)
    comparison: PairedComparison
    spot_check: Divergence  # frontier (as reference) vs candidate over the last trial's steps
    kv_intact: bool  # the KV rows below `context` are as filled before the trials
    elapsed_s: float


def _tokens(n_vocab: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_vocab, n).astype(np.int32)


def _trial(rt: DecodeRuntime, context: int, steps: int, start: cupy.cuda.Event, stop: cupy.cuda.Event) -> float:
    """Seconds per step over ``steps`` replays from ``context`` (the KV rows it appends are rewritten
    identically by every trial, so trials are interchangeable)."""
    with rt.stream:
        rt.buffers["counter"].fill(context)
    start.record(rt.stream)
    for _ in range(steps):
        rt.graph.launch(rt.stream)
    stop.record(rt.stream)
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) * 1e-3 / steps


def _trial_logits(rt: DecodeRuntime, context: int, steps: int) -> np.ndarray:
    """The logits of the last trial's steps, from the recorder's ring (row = position % history)."""
    cap, vocab = rt.plan.history, rt.plan.config.n_vocab
    ring = rt.buffers["history"][: cap * vocab].get().reshape(cap, vocab)
    return ring[[(context + i) % cap for i in range(steps)]]


def prepare(rt: DecodeRuntime, context: int, steps: int, seed: int, fill: bool = True) -> None:
    """Random unit-scale KV below ``context`` and a random teacher-forced sequence after it, the
    same for every runtime given the same seed."""
    if context + steps > rt.plan.n_ctx:
        raise ValueError(f"context {context} + {steps} steps exceeds the runtime's n_ctx {rt.plan.n_ctx}")
    if fill:
        rt.fill_kv(seed)
    rt.set_tokens(_tokens(rt.plan.config.n_vocab, context + steps, seed), start=context)
    if rt.graph is None:
        rt.capture()


def steps_for(step_s: float, target_trial_s: float = 0.004, cap: int = 256) -> int:
    """Steps per trial: long enough that event resolution (~0.5 us) is noise, short enough for many pairs."""
    return max(8, min(cap, math.ceil(target_trial_s / max(step_s, 1e-7))))


def interleaved(frontier: DecodeRuntime, candidate: DecodeRuntime, context: int, rule: SamplingRule,
                seed: int = 0, warmup_trials: int = 2) -> ContextRun:
    """Paired, alternating trials at one context length until ``rule`` says stop."""
    started = time.monotonic()
    probe_steps = 16
    shared = all(candidate.buffers[n] is frontier.buffers[n] for n in frontier.kv_views())
    for rt in (frontier, candidate):
        prepare(rt, context, min(max(probe_steps, 256), rt.plan.n_ctx - context), seed,
                fill=rt is frontier or not shared)
    events = [cupy.cuda.Event() for _ in range(4)]
    step_s = _trial(frontier, context, probe_steps, events[0], events[1])
    # The sequence prepared above already covers any trial length (steps <= history <= 256).
    steps = min(steps_for(step_s), frontier.plan.n_ctx - context, frontier.plan.history)
    history = {name: view[:, :context].copy() for name, view in frontier.kv_views().items()}
    f_times: list[float] = []
    c_times: list[float] = []
    block_ids: list[int] = []
    block = 0
    while True:
        # A fresh capture of both graphs per block: on an H200 one runtime's graph ran up to 2.6 %
        # apart from an identical one at a single (model, context), steadily; re-capturing turns
        # that into between-block spread, which the block bootstrap puts into the interval.
        for rt in (frontier, candidate) if block % 2 == 0 else (candidate, frontier):
            rt.capture()
        for _ in range(warmup_trials):
            _trial(frontier, context, steps, events[0], events[1])
            _trial(candidate, context, steps, events[2], events[3])
        for i in range(rule.block_pairs):
            if i % 2 == 0:
                f = _trial(frontier, context, steps, events[0], events[1])
                c = _trial(candidate, context, steps, events[2], events[3])
            else:
                c = _trial(candidate, context, steps, events[2], events[3])
                f = _trial(frontier, context, steps, events[0], events[1])
            f_times.append(f)
            c_times.append(c)
            block_ids.append(block)
        block += 1
        if rule.done(np.array(f_times), np.array(c_times), time.monotonic() - started, np.array(block_ids)):
            break
    intact = all(bool(cupy.array_equal(view[:, :context], history[name]))
                 for rt in (frontier, candidate) for name, view in rt.kv_views().items())
    del history
    comparison = compare_paired(np.array(f_times), np.array(c_times), rule.confidence, blocks=np.array(block_ids))
    spot = compare(normalize(_trial_logits(frontier, context, steps)),
                   normalize(_trial_logits(candidate, context, steps)))
    return ContextRun(context, steps, tuple(f_times), tuple(c_times), tuple(block_ids), comparison, spot, intact,
                      time.monotonic() - started)
