"""The baseline kernels through the kernel gates on a basket's shapes, over several private seeds:
how far inside its limit each slot sits, and how long the gates take. `evalbot calibrate` runs one
seed of this beside the end-to-end runs; this runs only the gates, so more seeds fit a device call.

    python3 benchmarks/baseline_kernel_gates.py --models DIR [--set production] [--seeds 3] [--out gates.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="directory holding the basket's GGUF files")
    ap.add_argument("--set", choices=("tiny", "production"), default="production")
    ap.add_argument("--seeds", type=int, default=3, help="private seeds, each a fresh draw of fuzzed shapes and inputs")
    ap.add_argument("--repeats", type=int, default=1, help="launches per gate run")
    ap.add_argument("--out", type=Path, help="write every gate result as JSON here")
    args = ap.parse_args(argv)

    from evalbot.evaluator import NO_GPU, device_arch, gpu_available
    from evalbot.policy import load_policy
    from harness.kernel_gates import basket_envs, run_kernel_gates
    from reference_runtime import basket, production
    from reference_runtime.runtime.kernels import baseline_kernels

    specs = production.SPECS if args.set == "production" else basket.SPECS
    models = {key: basket.model_path(args.models, key) for key in specs}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        print(f"missing basket models: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not gpu_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    policy = load_policy(basket_set=args.set)
    kernels = baseline_kernels(device_arch())
    t0 = time.perf_counter()
    fixed = basket_envs(models, set(kernels), policy.gate_n_ctx)
    print(f"shapes from the {args.set} plans at n_ctx {policy.gate_n_ctx}: {time.perf_counter() - t0:.1f} s")
    rows, failed = [], 0
    for i in range(args.seeds):
        seed = int.from_bytes(os.urandom(8), "little")  # private, as a validator's: never printed
        t0 = time.perf_counter()
        gates = run_kernel_gates(kernels, fixed, seed, policy.kernel_tolerances, policy.kernel_fuzz_cases,
                                 timeout_s=1800.0, repeats=args.repeats)
        took = time.perf_counter() - t0
        bad = [g for g in gates if not g.passed]
        failed += len(bad)
        print(f"seed {i + 1}/{args.seeds}: {len(gates)} slots, {len(bad)} failed, {took:.1f} s")
        for g in sorted(gates, key=lambda g: -(g.value / g.limit if g.limit else g.value))[:6]:
            print(f"  {g.name:34s} {'pass' if g.passed else 'FAIL'} {g.value:.3g} / {g.limit:.3g}  {g.detail}")
        for g in bad:
            print(f"  FAILED {g.name}: {g.detail}")
        rows.append({"seed_index": i, "seconds": took, "gates": [asdict(g) for g in gates]})
    if args.out:
        args.out.write_text(json.dumps({"set": args.set, "n_ctx": policy.gate_n_ctx, "runs": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
