"""Does the benchmark tell the truth? Figures for docs/verdicts.md, on a GPU:

- A/A: the baseline runtime against a second copy of itself, N full benchmark runs (every basket
  model, every policy context) scored by the policy: the label must be `none` every time; prints the
  spread of the measured speedups.
- Known effects: the baseline rmsnorm plus a wait of known length (global timer; its cost also
  timed on its own with CUDA events), sized per model to slow the step at the middle context by
  ~1 %, 3 % and 10 %: is each expected slowdown inside the measured interval, and which label follows?
  A 0 % run (the same kernel, no wait) measures what replacing the baseline rmsnorm costs by itself.
- Minimum detectable effect of each run.

    python benchmarks/verdict_experiments.py --basket DIR --out verdicts.json [--set tiny|production]
        [--aa-runs 20] [--aa-budget 1.0] [--effect-budget 5.0]

``--set production`` runs the production models found in DIR under their set's policy (v2: its
contexts, its labels); the default is the tiny basket under v1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cupy
import numpy as np

from evalbot.config import BASKET_SETS
from evalbot.policy import Policy, label, load_policy, sampling_rule
from harness.benchmark import interleaved
from harness.measurements import Measurements, SpeedCell
from harness.session import SLACK, gpu_identity, measure_peak_bandwidth, speed_cell
from harness.stats import SamplingRule, block_medians
from reference_runtime import basket
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.runtime.compile import DEFAULT_FLAGS, compile_cubin
from reference_runtime.runtime.decode import DecodeRuntime, device_arch
from reference_runtime.runtime.device import DeviceModel
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel, norm_block
from reference_runtime.runtime.launch import capture_repeated, function, geometry, pack, prepare, replay_us

SPIN_SOURCE = Path(__file__).parent / "data" / "rmsnorm_spin.cu"


def spin_kernel(ns: int) -> SlotKernel:
    flags = (*DEFAULT_FLAGS, f"-DSPIN_NS={ns}")
    cubin = compile_cubin(SPIN_SOURCE, device_arch(), flags=flags)
    return SlotKernel(cubin, (LaunchSpec("rmsnorm_spin", Const((1,)), norm_block, pdl=True),), origin="candidate")


def kernel_us(kernel: SlotKernel, n_embd: int, reps: int = 2000) -> float:
    """One launch's own time: ``reps`` launches captured in a graph, timed by events, divided."""
    x = cupy.random.default_rng(0).standard_normal(n_embd, dtype=cupy.float32)
    w, y = cupy.ones(n_embd, cupy.float32), cupy.empty(n_embd, cupy.float32)
    env = {"n_embd": n_embd}
    (spec,) = kernel.launches
    fn = function(str(kernel.cubin), spec.kernel)
    args = pack("rmsnorm", [x.data.ptr, w.data.ptr, y.data.ptr, n_embd, 1e-6])
    stream = cupy.cuda.Stream(non_blocking=True)
    graph = capture_repeated([prepare(fn, *geometry(spec, env), args, spec.pdl)], reps, stream)
    return statistics.median(replay_us(graph, stream, reps) for _ in range(5))


class Bench:
    def __init__(self, models: dict[str, Path], peak: float, policy: Policy) -> None:
        self.peak, self.policy = peak, policy
        self.opened = {k: GGUFModel.open(p) for k, p in models.items()}
        self.weights = {k: DeviceModel(m) for k, m in self.opened.items()}
        self.n_ctx = max(policy.contexts) + SLACK
        self.frontier = {k: DecodeRuntime(w, self.n_ctx) for k, w in self.weights.items()}
        self.block_speedups: dict[tuple[str, int], list[float]] = {}

    def run(self, overrides: dict[str, dict[str, SlotKernel]], rule: SamplingRule, seed: int) -> list[SpeedCell]:
        """Every model at every context; ``overrides`` per model key."""
        cells = []
        for key, weights in self.weights.items():
            candidate = DecodeRuntime(weights, self.n_ctx, overrides.get(key, {}), share_from=self.frontier[key])
            frontier = self.frontier[key]
            for ctx in self.policy.contexts:
                r = interleaved(frontier, candidate, ctx, rule, seed=seed + ctx)
                x = np.log(np.array(r.frontier_s) / np.array(r.candidate_s))
                self.block_speedups[(key, ctx)] = np.exp(block_medians(x, np.array(r.blocks))).round(4).tolist()
                cells.append(speed_cell(key, r, frontier, self.peak))
            del candidate
        return cells

    def norm_calls(self, key: str) -> int:
        return sum(1 for op in self.frontier[key].plan.ops if op.name == "rmsnorm")


def summary(cells: list[SpeedCell], blocks: dict[tuple[str, int], list[float]] | None = None) -> list[dict[str, Any]]:
    return [{"model": c.model, "context": c.context, "speedup": c.comparison.speedup, "ci": [c.comparison.ci_low,
             c.comparison.ci_high], "p": c.comparison.p_value, "mde": c.comparison.mde, "pairs": c.comparison.n_pairs,
             "t_frontier_us": c.t_frontier_s * 1e6, "roofline_us": c.t_roofline_s * 1e6,
             "block_speedups": (blocks or {}).get((c.model, c.context))} for c in cells]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basket", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", choices=sorted(BASKET_SETS), default="tiny", help="which basket, under its policy")
    parser.add_argument("--aa-runs", type=int, default=20)
    parser.add_argument("--aa-budget", type=float, default=1.0, help="seconds per (model, context) in A/A runs")
    parser.add_argument("--effect-budget", type=float, default=5.0)
    parser.add_argument("--mde-budget", type=float, default=None, help="seconds per cell (default: the policy's)")
    args = parser.parse_args()
    policy = load_policy(basket_set=args.set)

    gpu, driver = gpu_identity()
    peak = measure_peak_bandwidth()
    bench = Bench({k: basket.model_path(args.basket, k) for k in BASKET_SETS[args.set]}, peak, policy)
    out: dict[str, Any] = {"gpu": gpu, "driver": driver, "peak_bytes_per_s": peak, "policy_sha256": policy.sha256,
                           "basket_set": args.set}
    base_rule = sampling_rule(policy)
    if args.mde_budget is not None:
        base_rule = replace(base_rule, budget_s=args.mde_budget)

    # The minimum detectable effect at the policy's full budget, and A/A at a short one.
    started = time.monotonic()
    cells = bench.run({}, base_rule, seed=1000)
    out["mde_run"] = {"budget_s_per_cell": base_rule.budget_s, "seconds": time.monotonic() - started,
                      "label": label(Measurements(True, cells=tuple(cells)), policy).label, "cells": summary(cells)}
    print(f"full-budget A/A: label {out['mde_run']['label']}, MDE per cell "
          + ", ".join(f"{c.model}@{c.context} {100 * c.comparison.mde:.2f}%" for c in cells), flush=True)

    rule = replace(base_rule, budget_s=args.aa_budget)
    aa = []
    for i in range(args.aa_runs):
        cells = bench.run({}, rule, seed=i)
        decision = label(Measurements(True, cells=tuple(cells)), policy)
        aa.append({"label": decision.label, "score": decision.score, "cells": summary(cells, bench.block_speedups)})
        print(f"A/A {i + 1}/{args.aa_runs}: {decision.label}  speedups "
              + " ".join(f"{c.comparison.speedup:.4f} [{c.comparison.ci_low:.4f},{c.comparison.ci_high:.4f}]"
                         for c in cells), flush=True)
        wide = {f"{k}@{x}": v for (k, x), v in bench.block_speedups.items() if max(v) - min(v) > 0.005}
        if wide:
            print(f"    blocks that disagree by > 0.5 %: {wide}", flush=True)
    speedups = [c["speedup"] for run in aa for c in run["cells"]]
    nan = float("nan")  # --aa-runs 0
    out["aa"] = {"runs": aa, "budget_s_per_cell": args.aa_budget, "labels": [r["label"] for r in aa],
                 "speedup_min": min(speedups, default=nan), "speedup_max": max(speedups, default=nan),
                 "speedup_sd": statistics.pstdev(speedups) if speedups else nan}

    # Known effects: per model, a wait that costs `pct` of its step at the middle context.
    ctx0 = policy.contexts[len(policy.contexts) // 2]
    dims = {k: next(op.env["n_embd"] for op in bench.frontier[k].plan.ops if op.name == "rmsnorm")
            for k in bench.weights}
    plain = spin_kernel(0)
    step_us = {c["model"]: c["t_frontier_us"] for c in out["mde_run"]["cells"] if c["context"] == ctx0}
    effects = []
    # 0 %: the spin kernel with no wait, against the baseline rmsnorm. The expected values below come
    # from the wait timed alone, so this cell's own speedup is the offset they leave out; each later
    # cell is also checked against its expectation times that offset.
    offset: dict[tuple[str, int], float] = {}
    for pct in (0.0, 1.0, 3.0, 10.0):
        ns = {k: int(pct / 100 * step_us[k] * 1e3 / bench.norm_calls(k)) for k in bench.weights}
        kernels = {k: spin_kernel(ns[k]) for k in bench.weights}
        extra_us = {k: kernel_us(kernels[k], dims[k]) - kernel_us(plain, dims[k]) for k in bench.weights}
        cells = bench.run({k: {"rmsnorm": kernels[k]} for k in bench.weights},
                          replace(base_rule, budget_s=args.effect_budget), seed=77)
        decision = label(Measurements(True, cells=tuple(cells)), policy)
        rows = []
        for c in cells:
            expected = c.t_frontier_s / (c.t_frontier_s + bench.norm_calls(c.model) * extra_us[c.model] * 1e-6)
            inside = c.comparison.ci_low <= expected <= c.comparison.ci_high
            row = {**summary([c])[0], "expected_speedup": expected, "inside_ci": inside}
            if pct == 0:
                offset[(c.model, c.context)] = c.comparison.speedup
            elif (c.model, c.context) in offset:
                shifted = expected * offset[(c.model, c.context)]
                row |= {"expected_with_offset": shifted,
                        "inside_ci_with_offset": c.comparison.ci_low <= shifted <= c.comparison.ci_high}
            rows.append(row)
        effects.append({"target_pct": pct, "wait_ns": ns, "extra_us_per_call": extra_us,
                        "label": decision.label, "reasons": list(decision.reasons), "cells": rows})
        print(f"effect ~{pct}%: label {decision.label}; "
              + "; ".join(f"{r['model']}@{r['context']} expected {r['expected_speedup']:.4f} measured "
                          f"{r['speedup']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] {'in' if r['inside_ci'] else 'OUT'}"
                          + (f" (with the 0 % offset {r['expected_with_offset']:.4f} "
                             f"{'in' if r['inside_ci_with_offset'] else 'OUT'})" if "expected_with_offset" in r else "")
                          for r in rows), flush=True)
    out["known_effects"] = effects
    args.out.write_text(json.dumps(out, indent=1, default=lambda o: asdict(o)))
    labels = out["aa"]["labels"]
    if labels:
        print(f"\nA/A: {labels.count('none')}/{len(labels)} none; speedups in [{out['aa']['speedup_min']:.4f}, "
              f"{out['aa']['speedup_max']:.4f}], sd {out['aa']['speedup_sd']:.5f}")


if __name__ == "__main__":
    main()
