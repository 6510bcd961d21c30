"""The example repository's slot (``evalbot example-repo``, slot gemv_q4_k) on a GPU: is ``faster``
faster than the baseline, and by how much, at the shapes the basket models run?

    python benchmarks/example_repo_bench.py [--reps 200] [--rounds 15] [--cold] [--basket DIR] [--json out.json]

Kernels: ``runtime`` (the runtime's own baseline cubin), ``main`` (the example's verbatim copy of it,
built by the contributor build path: must time the same), ``faster`` and ``wrong``, each branch
fetched, exported and built with the local backend for this GPU's arch.

1. Correctness, through the kernel gates' machinery (the same cases, guarded launches and float64
   oracle as ``evalbot eval``): the basket shapes plus fuzzed ones; worst relative error per kernel
   against the policy's gemv limit. ``wrong`` must fail by orders of magnitude.
2. Speed: per shape, ``--reps`` back-to-back launches captured in one CUDA graph (as the runtime
   replays a decode step), timed with CUDA events; the kernels take turns round by round
   (``--rounds``) so clock and thermal drift cancel; the median per-launch microseconds. Weights stay
   in L2 between launches like the tiny basket's do in a decode step; ``--cold`` rotates enough
   copies of the weights to flush L2 (what larger models see).
3. Per decode step: the launch counts of each basket model (from its plan with ``--basket``, else the
   table below) times the per-launch times: the microseconds of gemv_q4_k per token.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import cupy
import gguf
import numpy as np

from evalbot.config import load_config
from evalbot.example_repo import SLOT, branch_kernels, write_example_repo
from evalbot.policy import load_policy
from harness import kernel_gates as kg
from reference_runtime.runtime.decode import device_arch, device_sm_count
from reference_runtime.runtime.kernels import SlotKernel, baseline_kernels
from reference_runtime.runtime.launch import capture_repeated, function, geometry, pack, prepare, replay_us

QT = gguf.GGMLQuantizationType
# gemv_q4_k launches per decode step, by (n_rows, n_cols), of the pinned basket models
# (build_plan(model).ops; tests/test_example_repo.py keeps this table equal to the plans).
BASKET_LAUNCHES: dict[str, dict[tuple[int, int], int]] = {
    "qwen3moe-tiny": {(256, 256): 6, (256, 2048): 4, (2048, 256): 4},
    "gemma4-tiny": {(256, 512): 4, (256, 1024): 4, (256, 2048): 2, (512, 256): 20, (1024, 256): 4, (2048, 256): 2},
}
TIMED = ("runtime", "main", "faster")


def plan_launches(basket_dir: Path) -> dict[str, dict[tuple[int, int], int]]:
    from reference_runtime import basket
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.runtime.plan import build_plan

    out: dict[str, dict[tuple[int, int], int]] = {}
    for key in basket.SPECS:
        with GGUFModel.open(basket.model_path(basket_dir, key)) as model:
            counts: dict[tuple[int, int], int] = {}
            for op in build_plan(model, n_ctx=64).ops:
                if op.name == SLOT:
                    shape = (op.env["n_rows"], op.env["n_cols"])
                    counts[shape] = counts.get(shape, 0) + 1
            out[key] = dict(sorted(counts.items()))
    return out


def correctness(kernels: dict[str, SlotKernel], shapes: list[tuple[int, int]], n_sm: int) -> dict[str, Any]:
    policy = load_policy()
    fixed = [kg.FixedShape.make("basket", {"n_rows": r, "n_cols": c}) for r, c in shapes]
    cases = kg.cases(SLOT, fixed, seed=2025, n_fuzz=policy.kernel_fuzz_cases)
    out: dict[str, Any] = {}
    for name, kernel in kernels.items():
        gate = kg.check_slot(SLOT, kernel, cases, policy.kernel_tolerances, n_sm)
        out[name] = {"passed": gate.passed, "worst_rel_error": gate.value, "limit": gate.limit, "detail": gate.detail}
        print(f"  {name:8s} {'pass' if gate.passed else 'FAIL'}  worst relative error {gate.value:.3g} "
              f"(limit {gate.limit:.3g}, {gate.value / gate.limit:.3g}x)  {gate.detail}", flush=True)
    return out


class Timer:
    """One CUDA graph of ``reps`` launches of one kernel at one shape."""

    def __init__(self, kernel: SlotKernel, rows: int, cols: int, reps: int, copies: int, n_sm: int,
                 stream: cupy.cuda.Stream) -> None:
        rng = np.random.default_rng(rows * 7919 + cols)
        first = cupy.asarray(kg.random_weights(QT.Q4_K, rows, cols, rng))
        self.weights = [first] + [first.copy() for _ in range(copies - 1)]
        self.x = cupy.asarray(rng.standard_normal(cols).astype(np.float32))
        self.y = cupy.zeros(rows, cupy.float32)
        (spec,) = kernel.launches
        fn = function(str(kernel.cubin), spec.kernel)
        grid, block, shared = geometry(spec, {"n_rows": rows, "n_cols": cols, "n_sm": n_sm})
        argsets = [pack(SLOT, [w.data.ptr, self.x.data.ptr, self.y.data.ptr, rows, cols]) for w in self.weights]
        self.stream, self.reps = stream, reps
        launches = [prepare(fn, grid, block, shared, args, spec.pdl) for args in argsets]
        self.graph = capture_repeated(launches, reps, stream)

    def us_per_launch(self) -> float:
        return replay_us(self.graph, self.stream, self.reps)


def speed(kernels: dict[str, SlotKernel], shapes: list[tuple[int, int]], reps: int, rounds: int, cold: bool,
          n_sm: int) -> dict[tuple[int, int], dict[str, float]]:
    l2 = int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("l2CacheSize", 64 * 2**20))
    stream = cupy.cuda.Stream(non_blocking=True)
    out: dict[tuple[int, int], dict[str, float]] = {}
    print(f"  {'n_rows':>6} {'n_cols':>6} " + " ".join(f"{n + ' us':>11}" for n in kernels)
          + "   faster/runtime  main/runtime", flush=True)
    for rows, cols in shapes:
        weight_bytes = rows * cols // 256 * 144
        copies = max(1, math.ceil(2 * l2 / weight_bytes)) if cold else 1
        timers = {name: Timer(k, rows, cols, max(reps, copies), copies, n_sm, stream) for name, k in kernels.items()}
        samples: dict[str, list[float]] = {name: [] for name in kernels}
        for r in range(rounds):
            order = list(kernels) if r % 2 == 0 else list(reversed(kernels))
            for name in order:
                samples[name].append(timers[name].us_per_launch())
        med = {name: statistics.median(v) for name, v in samples.items()}
        out[(rows, cols)] = med
        print(f"  {rows:>6} {cols:>6} " + " ".join(f"{med[n]:>11.3f}" for n in kernels)
              + f"   {med['faster'] / med['runtime']:>14.3f}  {med['main'] / med['runtime']:>12.3f}", flush=True)
        del timers
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200, help="launches per CUDA graph")
    parser.add_argument("--rounds", type=int, default=15, help="timed graph replays per kernel and shape")
    parser.add_argument("--cold", action="store_true", help="rotate weight copies so every launch misses L2")
    parser.add_argument("--basket", type=Path, help="basket models directory: take the launch counts from the plans")
    parser.add_argument("--workdir", type=Path, help="where to write the example repo and the build cache")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="evalbot-example-bench-"))
    repo = work / "kernels"
    if not repo.exists():
        write_example_repo(repo)
    cfg = load_config(None, environ={"EVALBOT_BUILD__BACKEND": "local",
                                     "EVALBOT_PATHS__CACHE_DIR": str(work / "cache")})
    arch, n_sm = device_arch(), device_sm_count()
    gpu = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"{gpu} ({arch}, {n_sm} SMs); example repo {repo}", flush=True)
    built = branch_kernels(repo, ("main", "faster", "wrong"), arch, cfg, work / "trees")
    kernels = {"runtime": baseline_kernels(arch)[SLOT], **built}

    launches = plan_launches(args.basket) if args.basket else BASKET_LAUNCHES
    shapes = sorted({s for counts in launches.values() for s in counts}, key=lambda s: (s[1], s[0]))
    print("correctness (kernel gates: basket shapes + fuzzed shapes, float64 oracle):", flush=True)
    checks = correctness(kernels, shapes, n_sm)
    print(f"speed ({'L2-cold' if args.cold else 'L2-warm'} weights; median of {args.rounds} rounds of "
          f"{args.reps} graph-captured launches; microseconds per launch):", flush=True)
    times = speed({n: kernels[n] for n in TIMED}, shapes, args.reps, args.rounds, args.cold, n_sm)
    print("per decode step (launch counts x per-launch times):", flush=True)
    steps: dict[str, dict[str, float]] = {}
    for model, counts in launches.items():
        steps[model] = {n: sum(c * times[s][n] for s, c in counts.items()) for n in TIMED}
        s = steps[model]
        print(f"  {model:14s} {sum(counts.values()):3d} launches: runtime {s['runtime']:.2f} us, "
              f"main {s['main']:.2f} us, "
              f"faster {s['faster']:.2f} us ({s['runtime'] - s['faster']:+.2f} us saved per token, "
              f"x{s['runtime'] / s['faster']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "gpu": gpu, "arch": arch, "cold": args.cold, "reps": args.reps, "rounds": args.rounds,
            "correctness": checks, "per_launch_us": [{"n_rows": r, "n_cols": c, **v} for (r, c), v in times.items()],
            "per_step_us": steps}, indent=1) + "\n")


if __name__ == "__main__":
    main()
