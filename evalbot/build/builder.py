"""Build every slot a tree's manifest overrides: stage, look up the cache, compile in the backend,
check the cubin, store it. The result is a :class:`BuildReport`; the contributor's mistakes (bad
manifest, compile error, limits hit, missing kernel) are REJECT reasons in it, never exceptions.
An :class:`~evalbot.errors.EvalbotError` means the bot itself cannot build (no docker, no image).
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evalbot.build import diagnostics
from evalbot.build.backend import Backend, RunResult, make_backend
from evalbot.build.cache import CUBIN, BuildCache, slot_key
from evalbot.build.cubin import CubinError, entry_kernels, kernel_params
from evalbot.build.nvcc import as_named, check_arch, compile_argv, require_arch
from evalbot.build.staging import ABI_DIR, stage_slot
from evalbot.build.verdict import BuildReport, SlotBuild
from evalbot.config import BuildConfig, Config
from evalbot.manifest import MANIFEST_NAME, Manifest, ManifestError, SlotOverride, load_manifest
from reference_runtime.runtime.abi import slot_abis

MAX_CUBIN_BYTES = 64 * 2**20

Progress = Callable[[str], None]


def build_tree(tree: Path, config: Config, arch: str, *, backend: Backend | None = None,
               use_cache: bool = True, progress: Progress | None = None, name: str | None = None) -> BuildReport:
    """Build the slots ``tree/kernels.toml`` overrides for ``arch`` (e.g. ``sm_90``). ``name``: what
    reasons and the report call the tree (default: its path), e.g. a commit for an exported tree
    whose cache path means nothing to the reader of a verdict.

    Slots whose compiles are identical (same source, includes and flags: several slots served by
    one translation unit) share one compile and one cache entry.
    """
    started = time.monotonic()
    check_arch(arch)
    backend = backend or make_backend(config.build)
    require_arch(backend, arch)  # an arch the compiler cannot target is the operator's error, not a REJECT
    say = progress or (lambda _msg: None)

    def report(slots: tuple[SlotBuild, ...], reasons: tuple[str, ...], toolchain: str = "") -> BuildReport:
        return BuildReport(Path(tree), arch, backend.name, backend.sandboxed, toolchain, slots, reasons,
                           time.monotonic() - started, name or str(tree))

    try:
        manifest = load_manifest(Path(tree), f"{name}:{MANIFEST_NAME}" if name else None)
    except ManifestError as exc:
        return report((), (str(exc),))
    toolchain = backend.toolchain()
    cache = BuildCache(config.cache_dir / "build" / "cubins")
    scratch = config.cache_dir / "build" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, ignore_cleanup_errors=True) as work:
        job = _Compiler(manifest, arch, backend, toolchain, cache, Path(work), use_cache, say, config.build)
        prepared = [job.prepare(override) for override in manifest.slots.values()]
        unique = {p.key: p for p in prepared if isinstance(p, _Staged)}
        with ThreadPoolExecutor(max_workers=config.build.jobs) as pool:
            compiled = dict(zip(unique, pool.map(job.compile, unique.values()), strict=True))
    results = tuple(p if isinstance(p, SlotBuild) else _verdict(p.override, compiled[p.key], say) for p in prepared)
    return report(results, tuple(r.reason for r in results if not r.ok), toolchain)


@dataclass(frozen=True)
class _Staged:
    override: SlotOverride
    key: str
    src: Path
    digests: dict[str, str]


@dataclass(frozen=True)
class _Compiled:
    """The outcome of one compile (shared by every slot with the same key)."""

    cached: bool
    seconds: float
    cubin: Path | None = None
    entries: frozenset[str] = frozenset()
    params: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)  # kernel -> (offset, size)s
    failure: str = ""  # why there is no cubin
    log: str = ""


def abi_layout(slot: str) -> tuple[tuple[int, int], ...]:
    """The (offset, size) of each parameter of the slot's ``EVALBOT_<SLOT>_ARGS``, as nvcc lays out a
    kernel's parameter buffer (each at its natural alignment)."""
    layout, offset = [], 0
    for param in slot_abis()[slot].params:
        size = 8 if param.is_pointer else np.dtype(param.scalar_dtype).itemsize
        offset = -(-offset // size) * size
        layout.append((offset, size))
        offset += size
    return tuple(layout)


def _signature_mismatch(slot: str, kernel: str, got: tuple[tuple[int, int], ...]) -> str | None:
    want = abi_layout(slot)
    if got == want:
        return None
    abi = slot_abis()[slot]
    return (f"kernel {kernel!r} takes {len(got)} parameters of {[size for _, size in got]} bytes, but the slot's "
            f"signature is {abi.macro} ({len(want)}: {abi.text}); declare it as "
            f"extern \"C\" __global__ void {kernel}({abi.macro})")


def _verdict(override: SlotOverride, compiled: _Compiled, say: Progress) -> SlotBuild:
    name = override.slot
    reason = compiled.failure
    if not reason and (missing := [k for k in override.kernels if k not in compiled.entries]):
        found = ", ".join(sorted(compiled.entries)) or "none"
        reason = (f"kernel {missing[0]!r} not found in the cubin (entry kernels: {found}); "
                  'declare it extern "C" __global__')
    if not reason:
        # A kernel nvcc recorded no parameter list for cannot be checked here; the gates still run it.
        reason = next((r for k in override.kernels if k in compiled.params
                       if (r := _signature_mismatch(name, k, compiled.params[k]))), "")
    if reason:
        say(f"{name}: REJECT")
        return SlotBuild(name, False, False, compiled.seconds, None, override.kernels, f"slot {name}: {reason}",
                         compiled.log)
    say(f"{name}: {'cached' if compiled.cached else 'built'}")
    return SlotBuild(name, True, compiled.cached, compiled.seconds, compiled.cubin, override.kernels, "",
                     compiled.log)


class _Compiler:
    def __init__(self, manifest: Manifest, arch: str, backend: Backend, toolchain: str, cache: BuildCache,
                 work: Path, use_cache: bool, say: Progress, limits: BuildConfig) -> None:
        self.manifest, self.arch, self.backend, self.toolchain = manifest, arch, backend, toolchain
        self.cache, self.work, self.use_cache, self.say, self.limits = cache, work, use_cache, say, limits

    def prepare(self, override: SlotOverride) -> _Staged | SlotBuild:
        """Stage what the slot's compile sees and compute its cache key (or the staging's REJECT)."""
        src = self.work / override.slot / "src"
        try:
            digests = stage_slot(self.manifest, override, src)
        except ManifestError as exc:
            return SlotBuild(override.slot, False, False, 0.0, None, override.kernels, str(exc))
        key = slot_key(override.source, override.flags, self.manifest.include, digests, self.arch, self.toolchain)
        return _Staged(override, key, src, digests)

    def compile(self, staged: _Staged) -> _Compiled:
        started = time.monotonic()
        if self.use_cache and (hit := self.cache.get(staged.key)):
            try:
                data = hit.read_bytes()
                return _Compiled(True, time.monotonic() - started, hit, entry_kernels(data), kernel_params(data))
            except (OSError, CubinError):
                pass  # an unreadable entry is rebuilt and replaced below
        override = staged.override
        out = staged.src.parent / "out"
        out.mkdir()
        output = f"{self.backend.out_path(out)}/{CUBIN}"
        argv = compile_argv(override.source, output, self.arch, (ABI_DIR, *self.manifest.include), override.flags)
        self.say(f"{override.slot}: compiling")
        result = self.backend.run(argv, staged.src, out)

        def failed(reason: str) -> _Compiled:
            return _Compiled(False, time.monotonic() - started, failure=reason, log=result.log)

        if reason := self._limit_hit(result):
            return failed(reason)
        if result.exit_code != 0:
            return failed(as_named(diagnostics.first_error_line(result.log)) or
                          f"nvcc exited with status {result.exit_code}")
        try:
            data = read_output(out / CUBIN, MAX_CUBIN_BYTES)
            entries = entry_kernels(data)
            params = kernel_params(data)
        except (OutputError, CubinError) as exc:
            return failed(f"no usable cubin: {exc}")
        meta = {"source": override.source, "arch": self.arch, "files": staged.digests, "flags": list(override.flags),
                "toolchain": self.toolchain, "seconds": round(result.seconds, 3), "entries": sorted(entries)}
        cubin = self.cache.put(staged.key, data, meta)
        return _Compiled(False, time.monotonic() - started, cubin, entries, params, log=result.log)

    def _limit_hit(self, result: RunResult) -> str | None:
        if result.timed_out:
            return f"build killed at the {self.limits.timeout_s:g} s time limit"
        if result.oom:
            return f"build killed at the {self.limits.memory_mb} MB memory limit"
        if result.flooded:
            first = as_named(diagnostics.first_error_line(result.log))
            tail = f" (first error: {first})" if first else ""
            return f"compiler output passed the {self.limits.log_limit_bytes}-byte log limit; build stopped{tail}"
        if result.disk_full:
            return f"build filled {result.disk_full}"
        return None


class OutputError(Exception):
    """What the sandbox left at the output path is not a cubin file the bot may read."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a directory",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def read_output(path: Path, limit: int) -> bytes:
    """Read a file the sandbox wrote, at most ``limit`` bytes, without ever blocking or following a link.

    The sandbox may have planted anything at ``path``: opening a FIFO would wait forever for a writer,
    a link could lead to a host file. So: ``lstat`` must say regular file; the open does not follow
    links nor wait (``O_NOFOLLOW | O_NONBLOCK``); ``fstat`` must still say the same regular file (it
    may have been swapped in between); and the read stops past ``limit`` whatever the size claimed.
    """
    name = path.name
    try:
        seen = os.lstat(path)
    except FileNotFoundError:
        raise OutputError(f"{name} was not written") from None
    except OSError as exc:
        raise OutputError(f"{name} cannot be examined: {exc.strerror}") from None
    if not stat.S_ISREG(seen.st_mode):
        raise OutputError(f"{name} is {_KINDS.get(stat.S_IFMT(seen.st_mode), 'not a file')}, not a regular file")
    if seen.st_size > limit:
        raise OutputError(f"{name} is larger than {limit} bytes")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OutputError(f"{name} cannot be opened: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
            raise OutputError(f"{name} was replaced while it was read")
        chunks, total = [], 0
        while chunk := os.read(fd, min(2**20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise OutputError(f"{name} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
