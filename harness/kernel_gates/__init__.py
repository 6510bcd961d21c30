"""Kernel gates: every slot a candidate overrides, checked against its float64 oracle on the basket's
shapes plus shapes fuzzed from a validator-private holdout seed.

What one gate does
------------------
For an overridden slot, :func:`cases` lists what to check:

* the **basket shapes**: the distinct shape environments (and per-layer scalars: RoPE bases, softcap,
  expert weight types, ...) with which the basket models' decode plans call the slot
  (:func:`basket_envs` / :func:`shapes_from_ops`);
* ``fuzz_cases`` **fuzzed shapes** drawn deterministically from the holdout seed, within what the
  slot's ABI allows: whole quantisation blocks, odd row counts, head_dim from the slot's name, GQA
  groups that do not divide the baseline's tiles, positions straddling the sliding-window edge and
  the last cache slot, RoPE positions up to 32k, router ties, padded expert strides, ...

Each case expands to one or more runs (several positions over one KV cache, several tokens of one
table), whose inputs are random but fixed by (seed, slot, case). A run uploads every pointer
argument into its own device buffer between 256-byte guard bands of a canary byte, with output-only
buffers poisoned (NaN; ids -1), launches the slot exactly as the runtime does
(:func:`reference_runtime.runtime.launch.run_slot`: same argument packing, poisoned scratch), and
checks, in this order:

1. the guard bands are intact (no write outside any buffer) and ``const`` inputs are unchanged;
2. the outputs against :mod:`reference_runtime.runtime.slot_math` in float64:

   * ``embed_*`` (dequantisation) and ``kv_append`` (an fp16 store, round to nearest): **exact**;
     the gate's value is the number of differing elements and its limit 0;
   * ``moe_router_topk``: the chosen ids exactly (as a set: their order is free), the weights
     matched by id;
   * every other slot: the normwise relative error ``||got - want|| / ||want||``, per head for
     attention and qk_norm_rope, within the policy's tolerance for the slot's family
     (:data:`TOLERANCE_FAMILIES`). A non-finite output element (unwritten, so still NaN) fails.

One :class:`~harness.measurements.GateResult` per slot, named ``kernel:<slot>``: the worst run's
value, the limit, the model the worst shape came from (``-`` for a fuzzed shape), and a detail
naming the failing shape. A passing gate names only basket shapes, never a fuzzed one.

:func:`run_kernel_gates` does the GPU work in a spawned worker (:func:`run_contained`), so a
candidate kernel that faults (an illegal address kills the CUDA context) or hangs is a failed gate
with the reason in its detail, never a crash of the caller.

The holdout seed
----------------
The fuzzed shapes and every input come from the seed; knowing it would let a kernel special-case
exactly the shapes it is checked on. It is the caller's: ``evalbot`` reads it from the environment
variable that ``[basket] holdout_seed_env`` names (default ``EVALBOT_HOLDOUT_SEED``; an integer,
``0x`` allowed), else from a random seed it creates once in the validator's data directory (mode
0600) — see ``evalbot.evaluator.holdout_seed``. A validator who wants its verdicts reproducible on
another box sets the variable to the same value there. This module takes the integer and never
prints, logs or returns it: case inputs are keyed by SHA-256 digests of (seed, slot, case), and
details name shapes, not seeds.
"""

from __future__ import annotations

from harness.kernel_gates.case_gen import Case, cases, check_case
from harness.kernel_gates.compare import Outcome, score, summarize
from harness.kernel_gates.inputs import Run, random_weights, runs
from harness.kernel_gates.launch import check_slot, run_kernel_gates
from harness.kernel_gates.shapes import (
    EXACT,
    F32_COLS_GRANULE,
    FUZZ,
    GATE_N_CTX,
    TOLERANCE_FAMILIES,
    FixedShape,
    GateFault,
    KernelGateError,
    basket_envs,
    family,
    gate_limit,
    merge_shapes,
    shapes_from_ops,
)

__all__ = [
    "EXACT", "F32_COLS_GRANULE", "FUZZ", "GATE_N_CTX", "TOLERANCE_FAMILIES", "Case", "FixedShape",
    "GateFault", "KernelGateError", "Outcome", "Run", "basket_envs", "cases", "check_case",
    "check_slot", "family", "gate_limit", "merge_shapes", "random_weights", "run_kernel_gates",
    "runs", "score", "shapes_from_ops", "summarize",
]
