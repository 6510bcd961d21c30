"""`evalbot eval` on every branch of the example contributor repo, as a contributor would run it, on a
GPU box: the verdict of each commit and its wall time, cold (first run: reference cache, builds)
and warm (every cache filled). Figures for docs/verdicts.md.

    python benchmarks/eval_example_repo.py --basket DIR --out example.json [--workdir DIR]
        [--set production|tiny] [--policy FILE]

The build backend is `local` (GPU boxes for development rarely run a docker engine); the verdicts
do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalbot.config import BASKET_SETS
from reference_runtime import basket

EXPECTED = {"main": "none", "faster": "a label (XS…XL)", "wrong": "REJECT (a gate)", "broken": "REJECT (build)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basket", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--branches", default="main,faster,wrong,broken")
    parser.add_argument("--passes", type=int, default=2, help="1: cold only; 2: cold then warm")
    parser.add_argument("--set", default="tiny", choices=sorted(BASKET_SETS), help="the basket set to evaluate on")
    parser.add_argument("--policy", type=Path, default=None, help="policy TOML (default: the shipped one)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="evalbot-example-"))
    data, cache, repo = work / "data", work / "cache", work / "kernels"
    (data / "models").mkdir(parents=True, exist_ok=True)
    for key in BASKET_SETS[args.set]:
        link = basket.model_path(data / "models", key)
        if not link.exists():
            os.symlink(basket.model_path(args.basket.resolve(), key), link)
    env = {**os.environ, "EVALBOT_BUILD__BACKEND": "local", "EVALBOT_PATHS__DATA_DIR": str(data),
           "EVALBOT_PATHS__CACHE_DIR": str(cache), "EVALBOT_BASKET__SET": args.set}
    if not repo.exists():
        subprocess.run([sys.executable, "-m", "evalbot", "example-repo", str(repo)], check=True, env=env)

    results = []
    for attempt in range(args.passes):
        for branch in args.branches.split(","):
            verdict = work / f"{branch}.{attempt}.json"
            start = time.monotonic()
            policy = ["--policy", str(args.policy.resolve())] if args.policy else []
            done = subprocess.run([sys.executable, "-m", "evalbot", "eval", branch, "--repo", str(repo),
                                   "--json", str(verdict), *policy], env=env, capture_output=True, text=True)
            seconds = time.monotonic() - start
            doc = json.loads(verdict.read_text()) if verdict.exists() else {}
            row = {"branch": branch, "pass": "cold" if attempt == 0 else "warm", "exit": done.returncode,
                   "label": doc.get("label"), "reasons": doc.get("reasons"), "seconds": seconds,
                   "expected": EXPECTED.get(branch, "?"), "document": doc,
                   "stderr": done.stderr[-2000:] if done.returncode == 2 else ""}
            results.append(row)
            args.out.write_text(json.dumps(results, indent=1))  # after each verdict: a cut-off run keeps them
            print(f"{branch:7s} {row['pass']}: {row['label']!s:7s} exit {done.returncode}  {seconds:6.1f} s  "
                  f"(expected {row['expected']})  {(doc.get('reasons') or [row['stderr'][-300:]])[0]}", flush=True)
            details = doc.get("details") or {}
            if details.get("stages_s"):
                print("    stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in details["stages_s"].items()))
                for key, model in (details.get("models") or {}).items():
                    print(f"      {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in model.get("stages_s", {}).items()))
            if branch == "faster" and doc:
                for cell in doc["measurements"]["cells"]:
                    c = cell["comparison"]
                    print(f"    {cell['model']}@{cell['context']}: speedup {c['speedup']:.4f} "
                          f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}] pairs {c['n_pairs']} mde {100 * c['mde']:.2f}%")


if __name__ == "__main__":
    main()
