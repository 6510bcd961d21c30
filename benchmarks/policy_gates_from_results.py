"""Write a policy's [gates] from a committed GPU run's baseline-vs-fp64 measurements.

``evalbot calibrate --policy-out`` does this live on a GPU; this does it from the ``runtime.json`` that
``benchmarks/production_device.sh`` left in docs/results/production, with the same noise-floor rule
(harness.calibrate), so the shipped policy v2 is reproducible from data in the repository:

    python3 benchmarks/policy_gates_from_results.py docs/results/production/runtime.json \
        evalbot/policies/v2.toml --margin 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evalbot.policy import parse_policy, with_gates
from harness.calibrate import NoiseFloor, propose_limits

NAMES = ("top1_min", "kl_mean_max", "kl_p99_max", "kl_max_max", "ppl_ratio_max")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="runtime.json of a production_device.sh run")
    ap.add_argument("policy", type=Path, help="the policy file to rewrite in place")
    ap.add_argument("--margin", type=float, default=4.0)
    args = ap.parse_args()
    run = json.loads(args.results.read_text())
    obs = {key: m["correctness"] for key, m in run["models"].items()}
    floor = NoiseFloor(
        n_observations=len(obs),
        top1_min=min(o["top1_agreement"] for o in obs.values()),
        kl_mean_max=max(o["kl_mean"] for o in obs.values()),
        kl_p99_max=max(o["kl_p99"] for o in obs.values()),
        kl_max_max=max(o["kl_max"] for o in obs.values()),
        ppl_ratio_max=1.0 + max(abs(o["ppl_ratio"] - 1.0) for o in obs.values()),
    )
    limits = propose_limits(floor, args.margin)
    worst = ", ".join(f"{n} {getattr(floor, n):.6g}" for n in NAMES)
    text = with_gates(args.policy.read_text(), {n: getattr(limits, n) for n in NAMES}, [
        "End-to-end, teacher-forced over the frozen corpus against the fp64 reference, per basket model.",
        f"From {args.results} ({run['gpu']}, one baseline run per model over {', '.join(obs)},",
        f"{next(iter(obs.values()))['n_positions']} positions each), {args.margin:g}x beyond the worst: {worst}.",
        "Regenerate: python3 benchmarks/policy_gates_from_results.py RESULTS POLICY, or live on a GPU with",
        "`evalbot calibrate --policy-out` (more runs: the floor can only widen).",
    ])
    parse_policy(text.encode(), str(args.policy))
    args.policy.write_text(text)
    print(f"wrote {args.policy}: " + ", ".join(f"{n} = {getattr(limits, n):.7g}" for n in NAMES))


if __name__ == "__main__":
    main()
