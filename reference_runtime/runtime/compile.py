"""nvcc -> cubin for the baseline kernels, cached on disk by content.

The cache key covers everything that can change the output: the source, every header of the
runtime's CUDA tree, the flags, the target arch and nvcc's version line. Candidate cubins are
built elsewhere (the sandboxed build); this is only for the runtime's own kernels.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.runtime.abi import cuda_dir

DEFAULT_FLAGS: tuple[str, ...] = ("-O3",)


class CompileError(ReferenceRuntimeError):
    pass


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALBOT_CUBIN_CACHE") or platformdirs.user_cache_dir("evalbot")) / "cubins"


@functools.cache
def nvcc_version(nvcc: str = "nvcc") -> str:
    if shutil.which(nvcc) is None:
        raise CompileError(f"{nvcc} is not on PATH: the runtime's kernels need the CUDA compiler")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def _headers_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(cuda_dir().rglob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_cubin(source: Path, arch: str, cache_dir: Path | None = None,
                  flags: Sequence[str] = DEFAULT_FLAGS) -> Path:
    """The cubin of ``source`` for ``arch`` (e.g. ``sm_90``), compiling it unless cached."""
    cache_dir = cache_dir or default_cache_dir()
    digest = hashlib.sha256()
    for part in (source.read_bytes(), _headers_digest().encode(), arch.encode(), "\0".join(flags).encode(),
                 nvcc_version().encode()):
        digest.update(part + b"\0")
    out = cache_dir / f"{source.stem}-{arch}-{digest.hexdigest()[:20]}.cubin"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    # -I the runtime's CUDA tree: any source may #include "evalbot_slots.h".
    argv = ["nvcc", "-cubin", f"-arch={arch}", f"-I{cuda_dir()}", *flags, "-o", str(tmp), str(source)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CompileError(f"nvcc failed on {source.name} for {arch}:\n{result.stderr.strip()}")
    os.replace(tmp, out)
    return out
