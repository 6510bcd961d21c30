"""Own time of one attention slot's launches (split-K partial, combine) at a model's shapes, each
kernel alone in a serial CUDA graph of repeated launches timed by events: for working on the
attention kernels without a whole model.

    python benchmarks/attn_bench.py [--source FILE.cu] [--splits N] [--reps 200] [--layer 'gemma3 swa']

Cases: the attention layers of the basket models and of Gemma 3 270M, at several positions.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cupy
import numpy as np

from reference_runtime.runtime.compile import compile_cubin
from reference_runtime.runtime.decode import device_arch, device_sm_count
from reference_runtime.runtime.driver_launch import PreparedLaunch
from reference_runtime.runtime.kernels import (
    Const,
    LaunchSpec,
    attn_combine_grid,
    attn_partial_grid,
    attn_scratch,
    kernel_source,
)
from reference_runtime.runtime.launch import capture_repeated, function, geometry, pack, prepare, replay_us

# (label, slot, n_head, n_head_kv, head_dim, n_swa)
LAYERS = (
    ("qwen3moe-tiny", "attn_decode_hd128", 16, 2, 128, 0),
    ("gemma4-tiny swa", "attn_decode_swa_hd256", 4, 2, 256, 128),
    ("gemma4-tiny full", "attn_decode_hd512", 4, 1, 512, 0),
    ("gemma3 swa", "attn_decode_swa_hd256", 4, 1, 256, 512),
    ("gemma3 full", "attn_decode_hd256", 4, 1, 256, 0),
)
POSITIONS = (128, 4096, 16384)
N_CTX = 16384 + 512


def own_us(launch: PreparedLaunch, stream: cupy.cuda.Stream, reps: int) -> float:
    graph = capture_repeated([launch], reps, stream)
    return statistics.median(replay_us(graph, stream, reps) for _ in range(7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=kernel_source("attention"))
    parser.add_argument("--splits", type=int, help="override the partial launch's grid.y")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--layer", action="append", help="only these LAYERS labels (repeatable)")
    args = parser.parse_args()
    cubin = str(compile_cubin(args.source, device_arch()))
    n_sm = device_sm_count()
    stream = cupy.cuda.Stream(non_blocking=True)
    rng = cupy.random.default_rng(0)
    print(f"{args.source.name}, splits {args.splits or 'baseline rule'}")
    for label, slot, n_head, n_head_kv, hd, n_swa in LAYERS:
        if args.layer and label not in args.layer:
            continue
        env = {"n_head": n_head, "n_head_kv": n_head_kv, "head_dim": hd, "n_ctx": N_CTX, "n_sm": n_sm}
        q = rng.standard_normal(n_head * hd, dtype=cupy.float32)
        k = rng.standard_normal(n_head_kv * N_CTX * hd, dtype=cupy.float32).astype(cupy.float16)
        v = rng.standard_normal(n_head_kv * N_CTX * hd, dtype=cupy.float32).astype(cupy.float16)
        out = cupy.empty(n_head * hd, cupy.float32)
        splits = args.splits or attn_partial_grid(env)[1]
        scratch = cupy.empty(attn_scratch(env) + n_head * splits * (hd + 2) * 4, cupy.uint8)
        pos = cupy.zeros(1, cupy.int32)
        values = [q.data.ptr, k.data.ptr, v.data.ptr, out.data.ptr, scratch.data.ptr, pos.data.ptr,
                  n_head, n_head_kv, N_CTX, n_swa, 1.0 / np.sqrt(hd)]
        packed = pack(slot, values)
        partial_grid = Const((n_head_kv, splits)) if args.splits else attn_partial_grid
        specs = {"partial": (f"{slot}_partial", partial_grid, (128,)), "combine": (f"{slot}_combine",
                 attn_combine_grid, (1024,))}
        launches = {}
        for part, (kernel, grid, block) in specs.items():
            launches[part] = prepare(function(cubin, kernel), *geometry(LaunchSpec(kernel, grid, Const(block)), env),
                                     packed, pdl=False)
        for p in POSITIONS:
            pos.fill(p)
            cupy.cuda.Device().synchronize()
            t = {part: own_us(fn, stream, args.reps) for part, fn in launches.items()}
            print(f"  {label:>17} pos {p:>5}: partial {t['partial']:6.2f} us  combine {t['combine']:6.2f} us "
                  f"(grid {n_head_kv}x{splits})", flush=True)


if __name__ == "__main__":
    main()
