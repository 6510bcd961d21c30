"""The build cache: one cubin per key, the key hashing everything the compile depended on.

Key = SHA-256 over the recipe version, the slot's source path, flags and include directories,
the SHA-256 of every staged file, the GPU arch and the toolchain string (image id and the sandbox's
``nvcc --version``). Entries are written to a temporary directory and renamed into place, so a
reader never sees half an entry and two builders racing on one key both succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Bump when the compile command or the entry layout changes: old entries then stop matching.
RECIPE = 2
CUBIN = "kernel.cubin"
META = "meta.json"


def slot_key(source: str, flags: tuple[str, ...], include: tuple[str, ...], digests: Mapping[str, str],
             arch: str, toolchain: str) -> str:
    """The slot's name is not part of the key: slots compiled from the same inputs share a cubin."""
    document = {
        "recipe": RECIPE, "source": source, "flags": list(flags), "include": list(include),
        "files": sorted(digests.items()), "arch": arch, "toolchain": toolchain,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        cubin = self._entry(key) / CUBIN
        return cubin if cubin.is_file() else None

    def put(self, key: str, cubin: bytes, meta: Mapping[str, Any]) -> Path:
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            (staging / CUBIN).write_bytes(cubin)
            (staging / META).write_text(json.dumps(dict(meta), indent=2, sort_keys=True))
            try:
                os.rename(staging, entry)
            except OSError:
                if not (entry / CUBIN).is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return entry / CUBIN
