"""The similarity distribution of copy detection (evalbot/copies.py) under the shipped policy's [copies].

Independent pairs: every pair of the runtime's baseline kernel files (its headers as common ground),
the example's faster gemv_q4_k, and two rmsnorm kernels written independently (tests/data/copies).
Copies: each of those files disguised (identifiers renamed, comments rewritten, whitespace reflowed:
tests/copies_support.py) against its original, and the same with another file's kernel appended.

    python3 benchmarks/copy_similarity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from copies_support import disguise  # noqa: E402

from evalbot import copies  # noqa: E402
from evalbot.policy import load_policy  # noqa: E402


def main() -> None:
    rule = load_policy().copies
    baseline = copies.tree_sources(ROOT / "reference_runtime" / "cuda")
    common = copies.boilerplate({p: t for p, t in baseline.items() if not p.endswith(".cu")}, rule)
    files = {p: t for p, t in baseline.items() if p.endswith(".cu")}
    files["example/gemv_q4_k_faster.cu"] = (ROOT / "evalbot/example_kernels/gemv_q4_k_faster.cu").read_text()
    for p in sorted((ROOT / "tests/data/copies").glob("*.cu")):
        files[f"own/{p.name}"] = p.read_text()
    names = sorted(files)

    def both(a: dict[str, str], b: dict[str, str]) -> float:
        return max(copies.similarity(a, b, rule, common), copies.similarity(b, a, rule, common))

    groups: dict[str, list[float]] = {"independent pairs": [], "disguised copy": [], "copy + another kernel": []}
    worst: dict[str, tuple[float, str]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            s = both({a: files[a]}, {b: files[b]})
            groups["independent pairs"].append(s)
            worst["independent pairs"] = max(worst.get("independent pairs", (0.0, "")), (s, f"{a} ~ {b}"))
        other = names[(i + 1) % len(names)]
        groups["disguised copy"].append(both({a: disguise(files[a])}, {a: files[a]}))
        groups["copy + another kernel"].append(both({a: disguise(files[a]), other: files[other]}, {a: files[a]}))
    print(f"[copies] warn {rule.warn}, block {rule.block}, noise {rule.noise}, guarantee {rule.guarantee}, "
          f"min_coverage {rule.min_coverage}; {len(names)} kernel files")
    print(f"{'':24} {'n':>4} {'min':>6} {'median':>6} {'p95':>6} {'max':>6}  >=warn >=block")
    for name, values in groups.items():
        v = np.array(values)
        print(f"{name:24} {len(v):4d} {v.min():6.3f} {np.median(v):6.3f} {np.percentile(v, 95):6.3f} {v.max():6.3f}"
              f"  {int((v >= rule.warn).sum()):6d} {int((v >= rule.block).sum()):6d}")
    s, pair = worst["independent pairs"]
    print(f"closest independent pair: {pair} ({s:.3f})")


if __name__ == "__main__":
    main()
