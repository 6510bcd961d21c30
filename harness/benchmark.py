"""Interleaved decode benchmark: the frontier and the candidate runtime, in one process, on one GPU.

A *trial* times ``steps`` consecutive graph replays of one runtime from position ``context`` with
CUDA events. Trials come in pairs, the order alternating (FC, CF, FC, …) so a drift within a pair
favours neither side, and pairs come in blocks, both graphs captured afresh before each block; the
sampling rule decides when enough blocks are in.

No timed step repeats an input. Every pair of trials decodes fresh teacher-forced tokens from its
own start position, both drawn from the validator's private seed: the start lies up to
:func:`band` positions below ``context``, so each trial sees a different KV history (earlier trials'
rows included). A kernel that caches its outputs keyed on its inputs never hits, and one that is fast
only on repeated inputs gains nothing (:func:`repeat_audit` measures that directly, as MLPerf's
TEST04 does). Within a pair both runtimes decode the same input, so their logits must agree: the
steps of randomly chosen pairs and of the last one are compared (the spot check), so a kernel that
is fast only when nobody looks cannot know which trials are looked at.

The candidate should share the frontier's stream and working memory (``DecodeRuntime(...,
share_from=frontier)``: KV cache, activations, scratch). On an H200, two runtimes with identical
kernels but their own buffers measured 1–3 % apart run after run (the basket's working sets sit near
the size of L2, so placement matters), and with their own streams up to 4.5 % apart; sharing makes
the two launch sequences differ only in their kernels. Every step writes its activations before
reading them and appends its own KV row; the rows below the lowest start must never change, which
is checked after the trials, so a candidate cannot rewrite the shared history to make the frontier's
answers match its shortcuts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cupy
import numpy as np

from harness.divergence import Divergence, compare, normalize
from harness.measurements import RepeatAudit
from harness.stats import PairedComparison, SamplingRule, compare_paired
from harness.trial_inputs import CHECK_SHARE, MAX_CHECKED_PAIRS, TrialInput, band, trial_input
from reference_runtime.runtime.decode import DecodeRuntime


@dataclass(frozen=True)
class ContextRun:
    context: int
    steps_per_trial: int
    frontier_s: tuple[float, ...]  # per-step seconds of each trial
    candidate_s: tuple[float, ...]
    blocks: tuple[int, ...]  # the block of each pair (graphs re-captured between blocks)
    comparison: PairedComparison
    spot_check: Divergence  # frontier (as reference) vs candidate over the checked pairs' steps
    kv_intact: bool  # the KV rows below the lowest start are as filled before the trials
    elapsed_s: float
    starts: tuple[int, ...] = ()  # the first position each pair decoded
    checked_pairs: int = 1  # pairs whose logits the spot check compared


def _tokens(n_vocab: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_vocab, n).astype(np.int32)


def _load(runtimes: tuple[DecodeRuntime, ...], inp: TrialInput) -> None:
    """Write ``inp``'s tokens where the next trials read them (once per distinct tokens buffer)."""
    seen: set[int] = set()
    for rt in runtimes:
        buf = rt.buffers["tokens"]
        if buf.data.ptr in seen:
            continue
        seen.add(buf.data.ptr)
        with rt.stream:
            buf[inp.start : inp.start + len(inp.tokens)].set(inp.tokens, stream=rt.stream)
    for rt in runtimes:
        rt.stream.synchronize()


def _trial(rt: DecodeRuntime, start_pos: int, steps: int, start: cupy.cuda.Event, stop: cupy.cuda.Event) -> float:
    """Seconds per step over ``steps`` replays from position ``start_pos``."""
    with rt.stream:
        rt.buffers["counter"].fill(start_pos)
    start.record(rt.stream)
    for _ in range(steps):
        rt.graph.launch(rt.stream)
    stop.record(rt.stream)
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) * 1e-3 / steps


def _trial_logits(rt: DecodeRuntime, start_pos: int, steps: int) -> np.ndarray:
    """The logits of the last trial's steps, from the recorder's ring (row = position % history)."""
    cap, vocab = rt.plan.history, rt.plan.config.n_vocab
    ring = rt.buffers["history"][: cap * vocab].reshape(cap, vocab)
    rows = cupy.asarray([(start_pos + i) % cap for i in range(steps)])
    with rt.stream:
        return ring[rows].get(stream=rt.stream)


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


def _snapshot(views: dict[str, cupy.ndarray], lowest: int) -> dict[str, cupy.ndarray | np.ndarray]:
    """The KV rows below ``lowest``: on the device while a copy fits, else in host memory (at 128k
    positions Gemma 4's cache alone is 28 GB: a second copy on the device would bar smaller GPUs)."""
    need = sum(v[:, :lowest].nbytes for v in views.values())
    on_device = need + (2 << 30) < cupy.cuda.runtime.memGetInfo()[0]
    return {name: view[:, :lowest].copy() if on_device else cupy.asnumpy(view[:, :lowest])
            for name, view in views.items()}


def _unchanged(rows: cupy.ndarray, before: cupy.ndarray | np.ndarray) -> bool:
    if isinstance(before, np.ndarray):
        return bool(np.array_equal(cupy.asnumpy(rows), before))
    return bool(cupy.array_equal(rows, before))


def steps_for(step_s: float, target_trial_s: float = 0.004, cap: int = 256) -> int:
    """Steps per trial: long enough that event resolution (~0.5 us) is noise, short enough for many pairs."""
    return max(8, min(cap, math.ceil(target_trial_s / max(step_s, 1e-7))))


def interleaved(frontier: DecodeRuntime, candidate: DecodeRuntime, context: int, rule: SamplingRule,
                seed: int = 0, warmup_trials: int = 2) -> ContextRun:
    """Paired, alternating trials at one context length until ``rule`` says stop, each pair on a
    fresh input (:func:`trial_input`) from the private ``seed``."""
    started = time.monotonic()
    probe_steps = 16
    shared = all(candidate.buffers[n] is frontier.buffers[n] for n in frontier.kv_views())
    lowest = context - band(context)
    for rt in (frontier, candidate):
        prepare(rt, context, min(max(probe_steps, 256), rt.plan.n_ctx - context), seed,
                fill=rt is frontier or not shared)
    events = [cupy.cuda.Event() for _ in range(4)]
    step_s = _trial(frontier, context, probe_steps, events[0], events[1])
    steps = min(steps_for(step_s), frontier.plan.n_ctx - context, frontier.plan.history)
    history = _snapshot(frontier.kv_views(), lowest)
    both = (frontier, candidate)
    n_vocab = frontier.plan.config.n_vocab
    draws = 0
    looks = np.random.default_rng([seed % (1 << 64), context, 1 << 30])

    def fresh() -> TrialInput:
        nonlocal draws
        draws += 1
        inp = trial_input(seed, draws, context, steps, n_vocab)
        _load(both, inp)
        return inp

    f_times: list[float] = []
    c_times: list[float] = []
    block_ids: list[int] = []
    starts: list[int] = []
    seen_f: list[np.ndarray] = []
    seen_c: list[np.ndarray] = []
    block = 0
    inp = fresh()
    while True:
        # A fresh capture of both graphs per block: on an H200 one runtime's graph ran up to 2.6 %
        # apart from an identical one at a single (model, context), steadily; re-capturing turns
        # that into between-block spread, which the block bootstrap puts into the interval.
        for rt in both if block % 2 == 0 else (candidate, frontier):
            rt.capture()
        for _ in range(warmup_trials):
            inp = fresh()
            _trial(frontier, inp.start, steps, events[0], events[1])
            _trial(candidate, inp.start, steps, events[2], events[3])
        for i in range(rule.block_pairs):
            inp = fresh()
            if i % 2 == 0:
                f = _trial(frontier, inp.start, steps, events[0], events[1])
                c = _trial(candidate, inp.start, steps, events[2], events[3])
            else:
                c = _trial(candidate, inp.start, steps, events[2], events[3])
                f = _trial(frontier, inp.start, steps, events[0], events[1])
            f_times.append(f)
            c_times.append(c)
            block_ids.append(block)
            starts.append(inp.start)
            if len(seen_f) < MAX_CHECKED_PAIRS - 1 and looks.random() < CHECK_SHARE:
                seen_f.append(_trial_logits(frontier, inp.start, steps))
                seen_c.append(_trial_logits(candidate, inp.start, steps))
        block += 1
        if rule.done(np.array(f_times), np.array(c_times), time.monotonic() - started, np.array(block_ids)):
            break
    seen_f.append(_trial_logits(frontier, inp.start, steps))  # the last pair, always
    seen_c.append(_trial_logits(candidate, inp.start, steps))
    intact = all(_unchanged(view[:, :lowest], history[name])
                 for rt in both for name, view in rt.kv_views().items())
    del history
    comparison = compare_paired(np.array(f_times), np.array(c_times), rule.confidence, blocks=np.array(block_ids))
    spot = compare(normalize(np.concatenate(seen_f)), normalize(np.concatenate(seen_c)))
    return ContextRun(context, steps, tuple(f_times), tuple(c_times), tuple(block_ids), comparison, spot, intact,
                      time.monotonic() - started, tuple(starts), len(seen_f))


def repeat_audit(frontier: DecodeRuntime, candidate: DecodeRuntime, context: int, seed: int,
                 pairs: int = 16) -> RepeatAudit:
    """Both runtimes timed on one input decoded again and again, and on a fresh input each time,
    alternating; run after :func:`interleaved` at ``context`` (graphs captured, KV filled)."""
    events = [cupy.cuda.Event() for _ in range(2)]
    both = (frontier, candidate)
    n_vocab = frontier.plan.config.n_vocab
    steps = min(steps_for(_trial(frontier, context, 16, *events)), frontier.plan.n_ctx - context,
                frontier.plan.history)
    # Indices far above any interleaved() draw: the audit's inputs are its own.
    repeated = trial_input(seed, 1 << 40, context, steps, n_vocab)
    times: dict[tuple[str, bool], list[float]] = {(side, rep): [] for side in "fc" for rep in (True, False)}
    for i in range(pairs + 1):  # the first round warms both up and is not kept
        for rep in (True, False) if i % 2 == 0 else (False, True):
            inp = repeated if rep else trial_input(seed, (1 << 40) + 1 + i, context, steps, n_vocab)
            _load(both, inp)
            f = _trial(frontier, inp.start, steps, *events)
            c = _trial(candidate, inp.start, steps, *events)
            if i:
                times["f", rep].append(f)
                times["c", rep].append(c)

    def ratio(side: str) -> float:
        return float(np.median(times[side, False]) / np.median(times[side, True]))

    return RepeatAudit(context, pairs, ratio("f"), ratio("c"))
