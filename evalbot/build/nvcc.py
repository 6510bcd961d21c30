"""The nvcc command line of one slot, the extra flags a manifest may add to it, and the GPU arch.

Flags come from contributors, so they are matched against a whitelist of whole-token patterns:
anything that could name a host program (``-ccbin``, ``--compiler-bindir``), pass raw options to
the host compiler (``-Xcompiler``: plugins, ``-B`` paths) or the linker, read or write extra files
(``--include-path`` outside the staged tree, ``--output-directory``, ``-save-temps``) or change the
target architecture is refused. Only code-generation choices remain.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePosixPath

from evalbot.build import diagnostics
from evalbot.build.backend import Backend
from evalbot.errors import EvalbotError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
ALLOWED_FLAG_PATTERNS: tuple[str, ...] = (
    r"-O[0-3]",
    r"--?use_fast_math",
    r"--?(ftz|prec-div|prec-sqrt|fmad)=(true|false)",
    r"-lineinfo|--generate-line-info",
    r"--?maxrregcount=\d{1,3}",
    r"-std=c\+\+(17|20)",
    r"--expt-relaxed-constexpr",
    r"--extra-device-vectorization",
    r"--?restrict",
    r"-Xptxas=(-v|-O[0-3]|--warn-on-spills)",
    r"-w",
    rf"-D{_IDENT}(=[A-Za-z0-9_.+-]{{0,64}})?",
)
_ALLOWED = re.compile("|".join(f"(?:{p})" for p in ALLOWED_FLAG_PATTERNS))
_ARCH = re.compile(r"sm_\d{2,3}[af]?")
MAX_FLAGS = 32
# (toolchain, arch) pairs whose nvcc answered that it builds for the arch.
_SUPPORTED: set[tuple[str, str]] = set()


class FlagError(EvalbotError):
    pass


def check_flag(flag: object) -> str:
    """Return ``flag`` if it is allowed, else raise :class:`FlagError` saying why."""
    if not isinstance(flag, str):
        raise FlagError(f"flags must be strings, got {flag!r}")
    if not _ALLOWED.fullmatch(flag):
        raise FlagError(
            f"flag {flag!r} is not allowed (allowed: -O0..3, -use_fast_math, -ftz/-prec-div/-prec-sqrt/-fmad="
            "true|false, -lineinfo, -maxrregcount=N, -std=c++17|c++20, --expt-relaxed-constexpr, "
            "--extra-device-vectorization, -restrict, -Xptxas=-v|-O0..3|--warn-on-spills, -w, -DNAME[=VALUE])"
        )
    return flag


class ArchError(EvalbotError):
    """The GPU architecture cannot be built for: the operator's (or the GPU's) fault, never a contributor's."""


def check_arch(arch: str) -> str:
    if not _ARCH.fullmatch(arch):
        raise ArchError(f"GPU arch {arch!r} is not of the form sm_90 / sm_120 / sm_90a")
    return arch


def require_arch(backend: Backend, arch: str) -> None:
    """Ask the backend's own nvcc whether it can build for ``arch``, before any slot is built.

    ``--dryrun`` answers for the exact name, ``a`` / ``f`` variants included, without compiling;
    the answer is kept for the toolchain (which names the nvcc version and the image).
    """
    check_arch(arch)
    toolchain = backend.toolchain()
    if (toolchain, arch) in _SUPPORTED:
        return
    with tempfile.TemporaryDirectory(prefix="evalbot-arch-") as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        out.chmod(0o777)  # the sandbox's unprivileged user may write here
        probe = backend.run(["nvcc", "--dryrun", "-cubin", f"-arch={arch}", "-o", f"{backend.out_path(out)}/probe",
                             "./probe.cu"], src, out)
        if probe.exit_code == 0:
            _SUPPORTED.add((toolchain, arch))
            return
        if probe.exit_code is None:
            raise EvalbotError(f"nvcc --dryrun for {arch} did not finish within the build limits: {probe.log[-300:]}")
        listed = backend.run(["nvcc", "--list-gpu-code"], src, out)
    said = diagnostics.first_error_line(probe.log) or probe.log.strip()[-200:] or f"exit status {probe.exit_code}"
    codes = " ".join(listed.log.split()) if listed.exit_code == 0 else "(nvcc --list-gpu-code failed)"
    raise ArchError(f"the {backend.name} build backend's nvcc cannot build for {arch}: {said}; it builds for "
                    f"{codes} (and the sm_90a-style variants of those that have them)")


def compile_argv(source: str, output: str, arch: str, include_dirs: tuple[str, ...],
                 flags: tuple[str, ...]) -> list[str]:
    """nvcc arguments (paths relative to the staged source root) that compile one slot to a cubin.

    The source and include paths come from the manifest, which refuses any part starting with '-';
    they are passed as ``./path`` all the same, so that none can read as an option. (nvcc 13.0 has no
    ``--`` to end its options: it answers "Unknown option '--'".)
    """
    argv = ["nvcc", "-cubin", f"-arch={check_arch(arch)}"]
    argv += [f"-I{_relative(d)}" for d in include_dirs]
    argv += [check_flag(f) for f in flags]
    return [*argv, "-o", output, _relative(source)]


def as_named(message: str | None) -> str | None:
    """A compiler message that starts with a ``./path`` of :func:`compile_argv`, naming the path as the
    manifest does (the contributor wrote ``src/a.cu``, not ``./src/a.cu``)."""
    return message.removeprefix("./") if message else message


def _relative(path: str) -> str:
    """``./path`` for a tree-relative POSIX path; one with a part starting with '-' or not relative raises."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part.startswith("-") or part == ".." for part in pure.parts):
        raise EvalbotError(f"{path!r} cannot go on the compiler's command line: it must be a relative path with "
                           "no part starting with '-' and no '..'")
    return f"./{pure.as_posix()}"
