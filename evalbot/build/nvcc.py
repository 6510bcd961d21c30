"""The nvcc command line of one slot, and the extra flags a manifest may add to it.

Flags come from contributors, so they are matched against a whitelist of whole-token patterns:
anything that could name a host program (``-ccbin``, ``--compiler-bindir``), pass raw options to
the host compiler (``-Xcompiler``: plugins, ``-B`` paths) or the linker, read or write extra files
(``--include-path`` outside the staged tree, ``--output-directory``, ``-save-temps``) or change the
target architecture is refused. Only code-generation choices remain.
"""

from __future__ import annotations

import re

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


def check_arch(arch: str) -> str:
    if not _ARCH.fullmatch(arch):
        raise EvalbotError(f"GPU arch {arch!r} is not of the form sm_90 / sm_120 / sm_90a")
    return arch


def compile_argv(source: str, output: str, arch: str, include_dirs: tuple[str, ...],
                 flags: tuple[str, ...]) -> list[str]:
    """nvcc arguments (paths relative to the staged source root) that compile one slot to a cubin."""
    argv = ["nvcc", "-cubin", f"-arch={check_arch(arch)}"]
    argv += [f"-I{d}" for d in include_dirs]
    argv += [check_flag(f) for f in flags]
    return [*argv, "-o", output, source]
