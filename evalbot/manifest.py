"""The kernel manifest: which slots a contributor's tree overrides, and how to build and launch them.

The manifest is ``kernels.toml`` at the root of the contributor's tree::

    version = 1
    include = ["include"]            # directories every slot may #include from (optional)

    [slots.rmsnorm]
    source = "src/rmsnorm.cu"        # one translation unit -> one cubin
    flags = ["-use_fast_math"]       # optional, from evalbot.build.nvcc's whitelist
    scratch_bytes = 0                # optional expression of the slot's shape symbols

    [[slots.rmsnorm.launch]]         # one or more kernels, launched in order
    kernel = "rmsnorm_f32"           # the entry's symbol name in the cubin (use extern "C")
    grid = [1, 1, 1]                 # 1 to 3 expressions; missing dimensions are 1
    block = ["min(1024, n_embd)"]
    shared_bytes = 0                 # dynamic shared memory, optional
    pdl = true                       # optional: the kernel starts with EVALBOT_GRID_WAIT() (see
                                     # evalbot_slots.h), so it may overlap the previous launch

The file is untrusted: every error names the file, the slot and the field; paths must stay inside
the tree (no absolute paths, no ``..``, no symlink leading out), no part of a path may start with
``-`` (the compiler would take it for an option), no path may hold control or invisible characters,
and arrays / tables may not nest deeper than :data:`evalbot.bounded_toml.MAX_DEPTH`; expressions
are parsed by :mod:`evalbot.safe_expr` against the slot's shape symbols and test-evaluated on the
example shapes of :mod:`reference_runtime.slots`, so a bad grid fails here rather than on the GPU.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from evalbot import bounded_toml, safe_expr
from evalbot.build.nvcc import MAX_FLAGS, FlagError, check_flag
from evalbot.errors import EvalbotError
from reference_runtime import slots as abi

MANIFEST_NAME = "kernels.toml"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 256 * 1024
MAX_INCLUDE_DIRS = 16
# Built from source: CUDA C++ or hand-written PTX, never a prebuilt cubin or fatbin.
SOURCE_SUFFIXES = (".cu", ".ptx")

# CUDA launch limits common to every architecture the bot builds for. The device's own limit on
# dynamic shared memory (227 KiB on sm_90, less on consumer parts) is checked again at launch.
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_SHARED_BYTES = 227 * 1024
MAX_SCRATCH_BYTES = 16 * 2**30

# Unicode categories refused in paths: control, format (bidi overrides, zero-width) and surrogate
# (a name that is not UTF-8, as os.walk decodes it).
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs"})
_KERNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TOP_KEYS = {"version", "include", "slots"}
_SLOT_KEYS = {"source", "flags", "scratch_bytes", "launch"}
_LAUNCH_KEYS = {"kernel", "grid", "block", "shared_bytes", "pdl"}


class ManifestError(EvalbotError):
    """The manifest is malformed; the message starts with ``file: slot NAME: field:``."""


# Builds the error for one refusal: (message) for a known field, (field, message) within a slot.
FieldError = Callable[[str], ManifestError]
SlotError = Callable[[str, str], ManifestError]
Dim3 = tuple[safe_expr.Expr, safe_expr.Expr, safe_expr.Expr]


@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: Dim3
    block: Dim3
    shared_bytes: safe_expr.Expr
    pdl: bool = False


@dataclass(frozen=True)
class SlotOverride:
    slot: str
    source: str  # POSIX path relative to the tree root, checked to stay inside it
    flags: tuple[str, ...]
    scratch_bytes: safe_expr.Expr
    launches: tuple[Launch, ...]

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(launch.kernel for launch in self.launches)


@dataclass(frozen=True)
class Manifest:
    path: Path
    root: Path
    include: tuple[str, ...]
    slots: Mapping[str, SlotOverride]


def load_manifest(root: Path, label: str | None = None) -> Manifest:
    """Read and validate ``root/kernels.toml``; errors name it ``label`` (default: its path)."""
    root = Path(root)
    label = label or str(root / MANIFEST_NAME)
    path = resolve_in_tree(root, MANIFEST_NAME, lambda msg: ManifestError(f"{label}: {msg}"))
    if not path.is_file():
        raise ManifestError(f"{label}: not a regular file")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{label}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{label}: cannot read: {exc}") from None
    return parse_manifest(text, root=root, label=label)


def parse_manifest(text: str, *, root: Path, label: str) -> Manifest:
    """Validate manifest ``text`` whose paths are relative to ``root``; ``label`` names it in errors."""
    try:
        raw = bounded_toml.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{label}: not valid TOML: {exc}") from None
    except bounded_toml.NestingError as exc:
        raise ManifestError(f"{label}: {exc}; refused") from None

    def top_error(field: str, msg: str) -> ManifestError:
        return ManifestError(f"{label}: {field}: {msg}")

    if unknown := set(raw) - _TOP_KEYS:
        raise top_error(sorted(unknown)[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    if raw.get("version") != MANIFEST_VERSION:
        raise top_error("version", f"must be {MANIFEST_VERSION}, got {raw.get('version')!r}")

    includes = raw.get("include", [])
    if not isinstance(includes, list) or len(includes) > MAX_INCLUDE_DIRS:
        raise top_error("include", f"must be a list of at most {MAX_INCLUDE_DIRS} directory paths")
    for i, rel in enumerate(includes):
        where = f"include[{i}]"
        directory = _named_path(root, rel, lambda msg, w=where: top_error(w, msg))
        if not directory.is_dir():
            raise top_error(where, f"{rel!r} is not a directory in the tree")

    table = raw.get("slots", {})
    if not isinstance(table, dict):
        raise top_error("slots", "must be a table of [slots.NAME] sections")
    overrides = {name: _slot(label, root, name, body) for name, body in table.items()}
    return Manifest(Path(label), root, tuple(_posix(p) for p in includes), overrides)


def resolve_in_tree(root: Path, rel: object, error: FieldError) -> Path:
    """The real path of ``rel`` inside ``root``; ``error(msg)`` builds the exception for a refusal."""
    if not isinstance(rel, str) or not rel.strip():
        raise error(f"expected a relative path string, got {rel!r}")
    if "\\" in rel or "\0" in rel:
        raise error(f"{rel!r}: use plain '/'-separated paths")
    refuse_unprintable(rel, error)
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise error(f"{rel!r}: absolute paths are refused; give a path relative to the tree root")
    if ".." in pure.parts:
        raise error(f"{rel!r}: '..' is refused; paths must stay inside the tree")
    base = root.resolve()
    candidate = base.joinpath(*pure.parts)
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise error(f"{rel!r} does not exist in the tree") from None
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise error(f"{rel!r} cannot be resolved: {exc}") from None
    if not real.is_relative_to(base):
        raise error(f"{rel!r} is a symlink leading outside the tree; refused")
    return real


def refuse_unprintable(name: str, error: FieldError) -> None:
    """Refuse a path holding control, invisible or undecodable characters: file names are quoted in
    REJECT reasons and comments, where a newline or a bidi override would change what a reader sees."""
    if bad := next((c for c in name if unicodedata.category(c) in _UNPRINTABLE), None):
        raise error(f"{name!r}: the character {bad!r} is refused in paths")


def _named_path(root: Path, rel: object, error: FieldError) -> Path:
    """:func:`resolve_in_tree` for a path the manifest names: those reach the compiler's command line,
    where a part starting with '-' would read as an option (``--options-file=...``), so none may."""
    if isinstance(rel, str) and any(part.startswith("-") for part in PurePosixPath(rel).parts):
        raise error(f"{rel!r}: a path part starting with '-' is refused (the compiler would read it as an option)")
    return resolve_in_tree(root, rel, error)


def _posix(rel: str) -> str:
    return PurePosixPath(rel).as_posix()


def _slot(label: str, root: Path, name: str, body: object) -> SlotOverride:
    def error(field: str, msg: str) -> ManifestError:
        return ManifestError(f"{label}: slot {name}: {field}: {msg}")

    spec = abi.SLOTS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, abi.SLOTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ManifestError(f"{label}: slot {name}: not a slot of ABI v{abi.ABI_VERSION}{hint}")
    if not isinstance(body, dict):
        raise ManifestError(f"{label}: slot {name}: must be a table")
    if unknown := set(body) - _SLOT_KEYS:
        raise error(sorted(unknown)[0], f"unknown key (known: {', '.join(sorted(_SLOT_KEYS))})")

    if "source" not in body:
        raise error("source", "missing (the .cu file to compile)")
    source = body["source"]
    real = _named_path(root, source, lambda msg: error("source", msg))
    if not real.is_file():
        raise error("source", f"{source!r} is not a regular file")
    if PurePosixPath(source).suffix not in SOURCE_SUFFIXES:
        raise error("source", f"{source!r}: sources are compiled, so they must be {' or '.join(SOURCE_SUFFIXES)} files")

    flags = body.get("flags", [])
    if not isinstance(flags, list) or len(flags) > MAX_FLAGS:
        raise error("flags", f"must be a list of at most {MAX_FLAGS} strings")
    for i, flag in enumerate(flags):
        try:
            check_flag(flag)
        except FlagError as exc:
            raise error(f"flags[{i}]", str(exc)) from None

    symbols = spec.all_symbols
    scratch = _expr(body.get("scratch_bytes", 0), symbols, lambda msg: error("scratch_bytes", msg))

    launches_raw = body.get("launch")
    if not isinstance(launches_raw, list) or not launches_raw:
        raise error("launch", "missing: add at least one [[slots.NAME.launch]] table")
    if len(launches_raw) > spec.max_launches:
        raise error("launch", f"slot {name} allows at most {spec.max_launches} launches, got {len(launches_raw)}")
    launches = tuple(_launch(launch, i, symbols, error) for i, launch in enumerate(launches_raw))
    kernels = [launch.kernel for launch in launches]
    if len(set(kernels)) != len(kernels):
        raise error("launch", f"kernel names repeat: {kernels}")

    override = SlotOverride(name, _posix(source), tuple(flags), scratch, launches)
    _probe(override, spec, error)
    return override


def _expr(value: Any, symbols: frozenset[str], error: FieldError) -> safe_expr.Expr:
    try:
        return safe_expr.parse(value, symbols)
    except safe_expr.ExprError as exc:
        raise error(str(exc)) from None


def _dims(value: object, field: str, symbols: frozenset[str], error: SlotError) -> Dim3:
    if not isinstance(value, list) or not 1 <= len(value) <= 3:
        raise error(field, "must be a list of 1 to 3 integers or expressions")
    x, y, z = (_expr(v, symbols, lambda msg, d=d: error(f"{field}[{d}]", msg))
               for d, v in enumerate([*value, 1, 1][:3]))
    return x, y, z


def _launch(raw: object, index: int, symbols: frozenset[str], error: SlotError) -> Launch:
    where = f"launch[{index}]"
    if not isinstance(raw, dict):
        raise error(where, "must be a table")
    if unknown := set(raw) - _LAUNCH_KEYS:
        raise error(f"{where}.{sorted(unknown)[0]}", f"unknown key (known: {', '.join(sorted(_LAUNCH_KEYS))})")
    kernel = raw.get("kernel")
    if not isinstance(kernel, str) or not _KERNEL_NAME.fullmatch(kernel):
        raise error(f"{where}.kernel", f"must be the kernel's symbol name (a C identifier), got {kernel!r}")
    for key in ("grid", "block"):
        if key not in raw:
            raise error(f"{where}.{key}", "missing")
    grid = _dims(raw["grid"], f"{where}.grid", symbols, error)
    block = _dims(raw["block"], f"{where}.block", symbols, error)
    shared = _expr(raw.get("shared_bytes", 0), symbols, lambda msg: error(f"{where}.shared_bytes", msg))
    pdl = raw.get("pdl", False)
    if not isinstance(pdl, bool):
        raise error(f"{where}.pdl", f"must be true or false, got {pdl!r}")
    return Launch(kernel, grid, block, shared, pdl)


def _probe(override: SlotOverride, spec: abi.Slot, error: SlotError) -> None:
    """Evaluate every expression on the slot's example shapes and check CUDA's launch limits."""
    for arch, env in zip(spec.archs, spec.example_shapes(), strict=True):
        probe = _Probe(arch, env, error)
        probe.check(override.scratch_bytes, "scratch_bytes", 0, MAX_SCRATCH_BYTES)
        for i, launch in enumerate(override.launches):
            where = f"launch[{i}]"
            threads = 1
            for d in range(3):
                threads *= probe.check(launch.block[d], f"{where}.block[{d}]", 1, MAX_BLOCK[d])
                probe.check(launch.grid[d], f"{where}.grid[{d}]", 1, MAX_GRID[d])
            if threads > MAX_THREADS_PER_BLOCK:
                raise error(f"{where}.block", f"{threads} threads per block on the {arch} example shapes "
                                              f"(at most {MAX_THREADS_PER_BLOCK})")
            probe.check(launch.shared_bytes, f"{where}.shared_bytes", 0, MAX_SHARED_BYTES)


@dataclass(frozen=True)
class _Probe:
    arch: str
    env: Mapping[str, int]
    error: SlotError

    def check(self, expr: safe_expr.Expr, field: str, low: int, high: int) -> int:
        try:
            value = expr.evaluate(self.env)
        except safe_expr.ExprError as exc:
            raise self.error(field, f"{exc} on the {self.arch} example shapes") from None
        if not low <= value <= high:
            raise self.error(field, f"is {value} on the {self.arch} example shapes (allowed {low}..{high})")
        return value
