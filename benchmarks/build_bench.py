"""Cold and cached build times of a kernels tree, per backend and GPU arch.

    python benchmarks/build_bench.py [--backend docker|local|both] [--arch sm_90 --arch sm_120] [--repeats 3]

Cold: every slot compiled into an empty cache. Cached: the same tree again, with a new backend object
(so the docker backend probes its toolchain again, as a fresh `evalbot build` process would), and
with one backend kept across builds (a validator daemon probes once).
Unchanged commit: what the validator pays in-process for a commit it has built before (mirror lookup,
`git archive` export, manifest, staging, hashing, toolchain probe, cache hits); and the whole
`python -m evalbot build <commit> --repo <repo>` command, first and again (process start included).
The docker backend uses the host-toolchain image (`evalbot build-image`). Until the runtime's baseline
kernels exist, the tree is the test kernels in tests/data/kernels.
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

KERNELS = ROOT / "tests" / "data" / "kernels"


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


def bench(backend: str, arch: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="evalbot-bench-") as tmp:
        work = Path(tmp)
        cfg = config_for(backend, work / "cache")
        n_slots = 0
        cold: list[float] = []
        for i in range(repeats):
            cache = work / f"cold-{i}"
            run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, cache_dir=str(cache)))
            started = time.perf_counter()
            report = build_tree(KERNELS, run_cfg, arch, backend=make_backend(run_cfg.build))
            cold.append(time.perf_counter() - started)
            if not report.ok:
                raise SystemExit(f"build failed: {report.reasons}")
            n_slots = len(report.slots)
        warm_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, cache_dir=str(work / "cold-0")))
        cached = [timed(lambda: build_tree(KERNELS, warm_cfg, arch, backend=make_backend(warm_cfg.build)))
                  for _ in range(repeats)]
        daemon_backend = make_backend(warm_cfg.build)
        daemon_backend.toolchain()
        cached_daemon = [timed(lambda: build_tree(KERNELS, warm_cfg, arch, backend=daemon_backend))
                         for _ in range(repeats)]

        repo, sha = commit_of(KERNELS, work)
        Mirror(work / "cold-0", str(repo)).fetch(sha)

        def rebuild_commit() -> None:
            mirror = Mirror(work / "cold-0", str(repo))
            with tempfile.TemporaryDirectory() as export:
                tree = mirror.export(mirror.fetch(sha), Path(export) / "tree")
                report = build_tree(tree, warm_cfg, arch, backend=make_backend(warm_cfg.build))
                assert report.ok and all(s.cached for s in report.slots)

        in_process = [timed(rebuild_commit) for _ in range(repeats)]
        env = {**os.environ, "EVALBOT_PATHS__CACHE_DIR": str(work / "cli-cache"), "EVALBOT_BUILD__BACKEND": backend,
               "EVALBOT_BUILD__IMAGE": cfg.build.image,
               "EVALBOT_BUILD__TOOLCHAIN_MOUNTS": ",".join(cfg.build.toolchain_mounts)}
        command = [sys.executable, "-m", "evalbot", "build", sha, "--repo", str(repo), "--arch", arch]
        first = timed(lambda: subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True))
        again = [timed(lambda: subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True))
                 for _ in range(repeats)]

    print(f"{backend:6} {arch:7} {n_slots} slots, jobs={cfg.build.jobs}, {os.cpu_count()} CPUs:  "
          f"cold {statistics.median(cold):6.2f} s (min {min(cold):.2f})   "
          f"cached {statistics.median(cached):5.2f} s (same backend {statistics.median(cached_daemon):5.2f} s)   "
          f"unchanged commit (fetch+export+build) {statistics.median(in_process):5.2f} s   "
          f"`evalbot build <commit>`: first {first:5.2f} s, unchanged {statistics.median(again):5.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("docker", "local", "both"), default="both")
    parser.add_argument("--arch", action="append", help="GPU arch (repeatable; default sm_90 and sm_120)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backends = ("docker", "local") if args.backend == "both" else (args.backend,)
    for backend in backends:
        for arch in args.arch or ["sm_90", "sm_120"]:
            bench(backend, arch, args.repeats)


if __name__ == "__main__":
    main()
