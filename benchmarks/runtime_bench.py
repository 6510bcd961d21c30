"""GPU decode runtime figures for docs/runtime.md: correctness over the frozen corpus, graph vs
eager step time, decode speed at several context lengths with the achieved fraction of measured
peak memory bandwidth, and (with ncu) the per-kernel times a graph replay is compared against.

    python benchmarks/runtime_bench.py bench --basket DIR --out bench.json [--gguf MODEL.gguf ...]
        [--contexts 128,4096,16384,32768]
    ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --clock-control none \\
        --cache-control none --log-file ncu.csv python benchmarks/runtime_bench.py ncu-target \\
        --basket DIR --out ncu_meta.json
    python benchmarks/runtime_bench.py overhead --ncu ncu.csv --meta ncu_meta.json --bench bench.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cupy
import numpy as np

from harness.divergence import compare, normalize
from harness.session import measure_peak_bandwidth
from reference_runtime import basket, corpus
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward
from reference_runtime.runtime.decode import DecodeRuntime
from reference_runtime.runtime.device import DeviceModel
from reference_runtime.runtime.traffic import step_traffic

CONTEXTS = (128, 4096, 16384)
NCU_CONTEXTS = (128, 16384)
TIMED = 200
SLACK = 512  # cache positions beyond the longest context: warm-up and timed steps


def at_context(rt: DecodeRuntime, ctx: int) -> None:
    tokens = np.random.default_rng(ctx).integers(0, rt.plan.config.n_vocab, rt.plan.n_ctx)
    rt.set_tokens(tokens, start=ctx)


def time_steps(rt: DecodeRuntime, ctx: int, eager: bool, n: int = TIMED, warmup: int = 20) -> list[float]:
    """Per-step times (ms) of ``n`` consecutive steps starting at position ``ctx``, by CUDA events
    between steps on the runtime's stream."""
    if not eager and rt.graph is None:
        rt.capture()
    at_context(rt, ctx)
    for _ in range(warmup):
        rt.step_eager() if eager else rt.replay()
    at_context(rt, ctx)
    events = [cupy.cuda.Event() for _ in range(n + 1)]
    for i in range(n):
        events[i].record(rt.stream)
        rt.step_eager() if eager else rt.replay()
    events[n].record(rt.stream)
    events[n].synchronize()
    return [cupy.cuda.get_elapsed_time(events[i], events[i + 1]) for i in range(n)]


def in_graph_kernel_times(rt: DecodeRuntime, ctx: int, replays: int = 30) -> dict[str, Any]:
    """Each kernel's own duration inside graph replays, from CUPTI's kernel records (PyTorch's
    profiler collects them for every kernel of the process, CuPy's included): the sum per replay,
    and the replay period on the same clock. ``rt`` must launch without PDL: a programmatically
    launched kernel starts early and its record includes the wait for its predecessor."""
    assert not rt.pdl, "kernel records of PDL launches include the wait for the previous kernel"
    import torch.profiler

    names = {launch.kernel for launch in rt.launches}
    at_context(rt, ctx)
    for _ in range(5):
        rt.replay()
    at_context(rt, ctx)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            rt.replay()
        rt.stream.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") == "kernel" and e.get("name") in names), key=lambda e: e["ts"])
    n = len(rt.launches)
    if len(kernels) != replays * n:
        return {"error": f"expected {replays * n} kernel records, got {len(kernels)}"}
    sums = [sum(e["dur"] for e in kernels[i * n : (i + 1) * n]) for i in range(replays)]
    periods = [kernels[(i + 1) * n]["ts"] - kernels[i * n]["ts"] for i in range(replays - 1)]
    by_kernel: dict[str, float] = {}
    for e in kernels:
        by_kernel[e["name"]] = by_kernel.get(e["name"], 0.0) + e["dur"] / replays
    return {"kernel_sum_us": statistics.median(sums), "serial_period_us": statistics.median(periods),
            "replays": replays, "by_kernel_us": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1]))}


def correctness(model: GGUFModel, weights: DeviceModel) -> dict[str, Any]:
    tokens = corpus.for_model(model).tokens
    rt = DecodeRuntime(weights, n_ctx=len(tokens))
    start = time.perf_counter()
    logits = rt.teacher_forced(tokens)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = Forward(model, xp=cupy).logprobs(tokens).get()
    ref_s = time.perf_counter() - start
    d = compare(ref, normalize(logits), np.append(tokens[1:], tokens[0]))
    return d.as_dict() | {"teacher_forced_s": decode_s, "reference_s": ref_s}


def evaluate(model: GGUFModel, peak: float, contexts: tuple[int, ...] = CONTEXTS) -> dict[str, Any]:
    pool = cupy.get_default_memory_pool()
    weights = DeviceModel(model)
    entry: dict[str, Any] = {"correctness": correctness(model, weights), "speed": {}}
    pool.free_all_blocks()
    base = pool.used_bytes()
    rt = DecodeRuntime(weights, n_ctx=max(contexts) + SLACK)
    serial = DecodeRuntime(weights, n_ctx=max(contexts) + SLACK, share_from=rt, pdl=False)  # same memory
    rt.fill_kv()
    # An evaluation holds exactly this: shared weights, and two runtimes over one KV cache at the
    # longest context (the second adds only its own history buffers).
    entry["memory"] = {"weight_bytes": weights.nbytes, "two_runtimes_bytes": pool.used_bytes() - base,
                       "n_ctx": max(contexts) + SLACK, "pool_total_bytes": pool.total_bytes(),
                       "device_used_bytes": _device_used()}
    entry["launches_per_step"] = len(rt.launches)
    entry["pdl_launches_per_step"] = sum(launch.prepared.pdl for launch in rt.launches)
    for ctx in contexts:
        graph = time_steps(rt, ctx, eager=False)
        graph_serial = time_steps(serial, ctx, eager=False)
        eager = time_steps(rt, ctx, eager=True, n=50, warmup=5)
        traffic = step_traffic(rt.plan, ctx + TIMED // 2)
        med, med_serial = statistics.median(graph), statistics.median(graph_serial)
        kernels = in_graph_kernel_times(serial, ctx)
        entry["speed"][str(ctx)] = kernels | {
            "ratio": med * 1e3 / kernels["kernel_sum_us"] if "kernel_sum_us" in kernels else float("nan"),
            "serial_ratio": med_serial * 1e3 / kernels["kernel_sum_us"] if "kernel_sum_us" in kernels else float("nan"),
            "graph_serial_ms_median": med_serial,
            "graph_ms_median": med, "graph_ms_mean": statistics.fmean(graph),
            "eager_ms_median": statistics.median(eager), "tokens_per_s": 1e3 / med,
            "weight_bytes": traffic.weight_bytes, "kv_bytes": traffic.kv_bytes,
            "bytes_per_s": traffic.total / (med * 1e-3), "fraction_of_peak": traffic.total / (med * 1e-3) / peak,
        }
    return entry


def _device_used() -> int:
    free, total = cupy.cuda.runtime.memGetInfo()
    return int(total - free)


def bench(args: argparse.Namespace) -> None:
    props = cupy.cuda.runtime.getDeviceProperties(0)
    out: dict[str, Any] = {"gpu": props["name"].decode(), "peak_bytes_per_s": measure_peak_bandwidth(), "models": {}}
    paths = [Path(p) for p in args.gguf] if args.gguf else [basket.model_path(Path(args.basket), k)
                                                            for k in basket.SPECS]
    contexts = tuple(int(c) for c in args.contexts.split(","))
    for path in paths:
        with GGUFModel.open(path) as model:
            out["models"][path.name.split(".")[0]] = evaluate(model, out["peak_bytes_per_s"], contexts)
            print(f"{path.name}: done", flush=True)
        cupy.get_default_memory_pool().free_all_blocks()
    Path(args.out).write_text(json.dumps(out, indent=2))
    print_bench(out)


def print_bench(out: dict[str, Any]) -> None:
    print(f"{out['gpu']}: peak copy bandwidth {out['peak_bytes_per_s'] / 1e9:.0f} GB/s")
    for key, entry in out["models"].items():
        c = entry["correctness"]
        print(f"{key}: top1 {c['top1_agreement']:.4f} KL mean {c['kl_mean']:.2e} p99 {c['kl_p99']:.2e} "
              f"max {c['kl_max']:.2e} ({c['n_positions']} positions); {entry['launches_per_step']} launches/step")
        if "memory" in entry:
            m = entry["memory"]
            print(f"  memory: weights {m['weight_bytes'] / 2**30:.2f} GiB, two runtimes at n_ctx {m['n_ctx']} "
                  f"{m['two_runtimes_bytes'] / 2**30:.2f} GiB, device in use {m['device_used_bytes'] / 2**30:.2f} GiB")
        for ctx, s in entry["speed"].items():
            print(f"  ctx {ctx:>5}: graph {s['graph_ms_median'] * 1e3:7.1f} us ({s['tokens_per_s']:7.0f} tok/s)  "
                  f"eager {s['eager_ms_median'] * 1e3:7.1f} us  bytes {s['weight_bytes'] + s['kv_bytes']:>10}  "
                  f"{s['bytes_per_s'] / 1e9:6.0f} GB/s = {s['fraction_of_peak']:.2f} of peak  "
                  f"kernels {s.get('kernel_sum_us', float('nan')):7.1f} us, ratio {s['ratio']:.3f} "
                  f"(without PDL {s['graph_serial_ms_median'] * 1e3:7.1f} us, {s['serial_ratio']:.3f}) "
                  f"{s.get('error', '')}")
        longest = max(entry["speed"], key=int)
        top = list(entry["speed"][longest].get("by_kernel_us", {}).items())[:6]
        print("  in-graph us/step at the longest context: " + ", ".join(f"{k} {v:.0f}" for k, v in top))


def ncu_target(args: argparse.Namespace) -> None:
    """One profiled eager step per (model, context), in order; ncu records only these."""
    meta = []
    for key in basket.SPECS:
        with GGUFModel.open(basket.model_path(Path(args.basket), key)) as model:
            rt = DecodeRuntime(DeviceModel(model), n_ctx=max(CONTEXTS) + SLACK)
            rt.fill_kv()
            for ctx in NCU_CONTEXTS:
                at_context(rt, ctx)
                for _ in range(3):
                    rt.step_eager()
                at_context(rt, ctx)
                cupy.cuda.runtime.profilerStart()
                rt.step_eager()
                rt.stream.synchronize()
                cupy.cuda.runtime.profilerStop()
                meta.append({"model": key, "ctx": ctx, "kernels": [launch.kernel for launch in rt.launches]})
    Path(args.out).write_text(json.dumps(meta, indent=2))


_UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6, "nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}


def overhead(args: argparse.Namespace) -> None:
    """Graph replay median over the sum of the same step's kernel durations as ncu measures them
    (each kernel serialised and replayed alone, so isolated-launch times, not in-graph ones)."""
    lines = Path(args.ncu).read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    rows = [r for r in csv.DictReader(lines[first:]) if r["Metric Name"] == "gpu__time_duration.sum"]
    durations = [float(r["Metric Value"].replace(",", "")) * _UNITS[r["Metric Unit"]] for r in rows]
    names = [r["Kernel Name"] for r in rows]
    bench_out = json.loads(Path(args.bench).read_text())
    result, at = [], 0
    for step in json.loads(Path(args.meta).read_text()):
        n = len(step["kernels"])
        if [name.split("(")[0] for name in names[at : at + n]] != step["kernels"]:
            raise SystemExit(f"ncu rows do not line up with the launches of {step['model']} ctx {step['ctx']}")
        kernel_us = sum(durations[at : at + n])
        at += n
        graph_us = bench_out["models"][step["model"]]["speed"][str(step["ctx"])]["graph_ms_median"] * 1e3
        result.append({"model": step["model"], "ctx": step["ctx"], "kernels": n, "kernel_sum_us": kernel_us,
                       "graph_us": graph_us, "ratio": graph_us / kernel_us})
        print(f"{step['model']:>14} ctx {step['ctx']:>5}: {n} kernels, sum {kernel_us:7.1f} us, graph replay "
              f"{graph_us:7.1f} us, ratio {graph_us / kernel_us:.3f}")
    Path(args.out).write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("bench", "ncu-target"):
        p = sub.add_parser(name)
        p.add_argument("--basket", required=True)
        p.add_argument("--out", required=True)
    sub.choices["bench"].add_argument("--gguf", nargs="*", help="GGUF files instead of the basket")
    sub.choices["bench"].add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    p = sub.add_parser("overhead")
    for flag in ("--ncu", "--meta", "--bench", "--out"):
        p.add_argument(flag, required=True)
    args = parser.parse_args()
    {"bench": bench, "ncu-target": ncu_target, "overhead": overhead}[args.cmd](args)


if __name__ == "__main__":
    main()
