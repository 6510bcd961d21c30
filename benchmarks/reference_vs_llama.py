"""Cross-check the fp64 reference against llama.cpp on every basket model; prints one table.

    python benchmarks/reference_vs_llama.py [--models-dir DIR] [--positions N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from evalbot.config import load_config
from harness.divergence import compare, normalize
from reference_runtime import basket, corpus, llama_cpp_logits
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=load_config().data_dir / "models")
    parser.add_argument("--positions", type=int, default=0, help="first N corpus tokens (0: all)")
    args = parser.parse_args()

    paths = {key: basket.model_path(args.models_dir, key) for key in basket.SPECS}
    if (real := basket.real_model_path()) is not None:
        paths[basket.REAL_MODEL] = real
    table = Table(title="fp64 reference vs llama.cpp (CPU), teacher-forced over the frozen corpus")
    for col in ("model", "positions", "top-1 agree", "confident", "agree (confident)",
                "KL mean", "KL p99", "KL max", "ppl ref", "ppl llama", "ref s", "llama s"):
        table.add_column(col, justify="right")
    for key, path in paths.items():
        model = GGUFModel.open(path)
        tokens = corpus.for_model(model).tokens
        if args.positions:
            tokens = tokens[: args.positions]
        t0 = time.perf_counter()
        ref = Forward(model).logprobs(tokens)
        t1 = time.perf_counter()
        cand = normalize(llama_cpp_logits.logits(path, tokens))
        t2 = time.perf_counter()
        d = compare(ref[:-1], cand[:-1], targets=np.asarray(tokens[1:]))
        table.add_row(
            key, str(d.n_positions), f"{d.top1_agreement:.4f}", str(d.n_confident),
            f"{d.top1_agreement_confident:.4f}", f"{d.kl_mean:.2e}", f"{d.kl_p99:.2e}", f"{d.kl_max:.2e}",
            f"{d.ppl_ref:.3f}", f"{d.ppl_cand:.3f}", f"{t1 - t0:.1f}", f"{t2 - t1:.1f}",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
