"""Cold and cached build times of a kernels tree, per backend and GPU arch.

    python benchmarks/build_bench.py [--tree baseline|test|both] [--backend docker|local|both]
                                     [--arch sm_90 --arch sm_120] [--repeats 3]

Cold: every slot compiled into an empty cache. Cached: the same tree again, with a new backend object
(so the docker backend probes its toolchain again, as a fresh `evalbot build` process would), and
with one backend kept across builds (a validator daemon probes once).
Unchanged commit: what the validator pays in-process for a commit it has built before (mirror lookup,
`git archive` export, manifest, staging, hashing, toolchain probe, cache hits); and the whole
`python -m evalbot build <commit> --repo <repo>` command, first and again (process start included).
The docker backend uses the host-toolchain image (`evalbot build-image`). Trees: `baseline` is the
runtime's own CUDA tree (reference_runtime/cuda) with a manifest overriding every slot; `test` is
the four test kernels in tests/data/kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evalbot.build.backend import make_backend  # noqa: E402
from evalbot.build.builder import build_tree  # noqa: E402
from evalbot.config import Config, load_config  # noqa: E402
from evalbot.fetch import Mirror  # noqa: E402

TEST_KERNELS = ROOT / "tests" / "data" / "kernels"

_GEMV = {"grid": ["ceil_div(n_rows, 8)"], "block": [128]}
_ATTN_SPLITS = "max(1, min(ceil_div(2 * n_sm, n_head_kv), ceil_div(n_ctx, 32), 1024))"


def _launch(kernel: str, grid: list[object], block: list[object]) -> str:
    return f'kernel = "{kernel}"\ngrid = {_toml_list(grid)}\nblock = {_toml_list(block)}\n'


def _toml_list(items: list[object]) -> str:
    return "[" + ", ".join(f'"{i}"' if isinstance(i, str) else str(i) for i in items) + "]"


def baseline_tree(dest: Path) -> Path:
    """The runtime's baseline kernels laid out as a contributor tree overriding every slot.

    The CUDA tree is copied as it is (``common.h`` includes ``../evalbot_slots.h``); the geometry
    follows reference_runtime/runtime/kernels.py closely enough to pass the manifest's checks (it is
    not launched here).
    """
    from reference_runtime import slots
    from reference_runtime.runtime.abi import cuda_dir
    from reference_runtime.runtime.kernels import baseline_slot_names

    shutil.copytree(cuda_dir(), dest / "cuda")
    sections: dict[str, tuple[str, list[str], str]] = {}
    for wtype in slots.WEIGHT_TYPES:
        sections[f"gemv_{wtype}"] = ("gemv", [_launch(f"gemv_{wtype}", _GEMV["grid"], _GEMV["block"])], "0")
        sections[f"lm_head_{wtype}"] = ("gemv", [_launch(f"lm_head_{wtype}", ["ceil_div(n_vocab, 8)"], [128])], "0")
        sections[f"embed_{wtype}"] = ("embed", [_launch(f"embed_{wtype}", [1], [256])], "0")
    for name in ("rmsnorm", "rmsnorm_residual", "rmsnorm_post_add"):
        sections[name] = ("norm", [_launch(name, [1], ["min(1024, 32 * ceil_div(max(n_embd // 4, 1), 32))"])], "0")
    sections["qk_norm_rope"] = ("rope", [_launch("qk_norm_rope", ["n_head + 2 * n_head_kv"], [128])], "0")
    sections["kv_append"] = ("rope", [_launch("kv_append", ["n_head_kv"], [128])], "0")
    attn_scratch = (f"256 + ceil_div(n_head * {_ATTN_SPLITS} * 8, 16) * 16 + "
                    f"n_head * {_ATTN_SPLITS} * head_dim * 4")
    for name in slots.SLOTS:
        if name.startswith("attn_decode"):
            sections[name] = ("attention", [_launch(f"{name}_partial", ["n_head_kv", _ATTN_SPLITS], [128]),
                                            _launch(f"{name}_combine", ["n_head"], [1024])], attn_scratch)
    for kind in ("swiglu", "geglu"):
        sections[f"glu_{kind}"] = ("glu", [_launch(f"glu_{kind}", ["ceil_div(n_ff // 4, 256)"], [256])], "0")
        sections[f"moe_ffn_{kind}"] = ("moe", [_launch(f"moe_ffn_{kind}_gate_up", ["ceil_div(n_ff_exp, 8)",
                                                                                  "n_expert_used"], [128]),
                                               _launch("moe_ffn_down", ["n_embd"], [128])],
                                       "n_expert_used * n_ff_exp * 4")
    sections["moe_router_topk"] = ("moe", [_launch("moe_router_topk", [1], [32])], "0")
    if set(sections) != baseline_slot_names():
        raise SystemExit(f"baseline slots changed: {sorted(set(sections) ^ baseline_slot_names())}")
    text = 'version = 1\ninclude = ["cuda"]\n'
    for name, (source, launches, scratch) in sections.items():
        text += f'\n[slots.{name}]\nsource = "cuda/kernels/{source}.cu"\nscratch_bytes = "{scratch}"\n'
        text += "".join(f"\n[[slots.{name}.launch]]\n{launch}" for launch in launches)
    (dest / "kernels.toml").write_text(text)
    return dest


def config_for(backend: str, cache: Path) -> Config:
    cfg = load_config(None, environ={})
    build = dataclasses.replace(cfg.build, backend=backend)
    if backend == "docker":
        from evalbot.build.hostimage import build_host_image

        image = build_host_image()
        build = dataclasses.replace(build, image=image.tag, toolchain_mounts=list(image.toolchain_mounts))
    return dataclasses.replace(cfg, build=build, paths=dataclasses.replace(cfg.paths, cache_dir=str(cache)))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def commit_of(tree: Path, where: Path) -> tuple[Path, str]:
    repo = where / "repo"
    shutil.copytree(tree, repo)
    ident = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env={**os.environ, **ident})
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return repo, sha


def bench(label: str, tree: Path, backend: str, arch: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="evalbot-bench-") as tmp:
        work = Path(tmp)
        cfg = config_for(backend, work / "cache")
        n_slots = n_compiles = 0
        cold: list[float] = []
        for i in range(repeats):
            cache = work / f"cold-{i}"
            run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, cache_dir=str(cache)))
            started = time.perf_counter()
            report = build_tree(tree, run_cfg, arch, backend=make_backend(run_cfg.build))
            cold.append(time.perf_counter() - started)
            if not report.ok:
                raise SystemExit(f"build failed: {report.reasons}")
            n_slots = len(report.slots)
            n_compiles = len(set(report.cubins().values()))
        warm_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, cache_dir=str(work / "cold-0")))
        cached = [timed(lambda: build_tree(tree, warm_cfg, arch, backend=make_backend(warm_cfg.build)))
                  for _ in range(repeats)]
        daemon_backend = make_backend(warm_cfg.build)
        daemon_backend.toolchain()
        cached_daemon = [timed(lambda: build_tree(tree, warm_cfg, arch, backend=daemon_backend))
                         for _ in range(repeats)]

        repo, sha = commit_of(tree, work)
        Mirror(work / "cold-0", str(repo)).fetch(sha)

        def rebuild_commit() -> None:
            mirror = Mirror(work / "cold-0", str(repo))
            with tempfile.TemporaryDirectory() as export:
                exported = mirror.export(mirror.fetch(sha), Path(export) / "tree")
                report = build_tree(exported, warm_cfg, arch, backend=make_backend(warm_cfg.build))
                assert report.ok and all(s.cached for s in report.slots)

        in_process = [timed(rebuild_commit) for _ in range(repeats)]
        env = {**os.environ, "EVALBOT_PATHS__CACHE_DIR": str(work / "cli-cache"), "EVALBOT_BUILD__BACKEND": backend,
               "EVALBOT_BUILD__IMAGE": cfg.build.image,
               "EVALBOT_BUILD__TOOLCHAIN_MOUNTS": ",".join(cfg.build.toolchain_mounts)}
        command = [sys.executable, "-m", "evalbot", "build", sha, "--repo", str(repo), "--arch", arch]
        first = timed(lambda: subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True))
        again = [timed(lambda: subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True))
                 for _ in range(repeats)]

    print(f"{label:8} {backend:6} {arch:7} {n_slots} slots / {n_compiles} compiles, jobs={cfg.build.jobs}, "
          f"{os.cpu_count()} CPUs:  "
          f"cold {statistics.median(cold):6.2f} s (min {min(cold):.2f})   "
          f"cached {statistics.median(cached):5.2f} s (same backend {statistics.median(cached_daemon):5.2f} s)   "
          f"unchanged commit (fetch+export+build) {statistics.median(in_process):5.2f} s   "
          f"`evalbot build <commit>`: first {first:5.2f} s, unchanged {statistics.median(again):5.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", choices=("baseline", "test", "both"), default="both")
    parser.add_argument("--backend", choices=("docker", "local", "both"), default="both")
    parser.add_argument("--arch", action="append", help="GPU arch (repeatable; default sm_90 and sm_120)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalbot-baseline-") as tmp:
        trees = {"baseline": lambda: baseline_tree(Path(tmp)), "test": lambda: TEST_KERNELS}
        chosen = ("baseline", "test") if args.tree == "both" else (args.tree,)
        for label in chosen:
            tree = trees[label]()
            for backend in ("docker", "local") if args.backend == "both" else (args.backend,):
                for arch in args.arch or ["sm_90", "sm_120"]:
                    bench(label, tree, backend, arch, args.repeats)


if __name__ == "__main__":
    main()
