"""SHA-256 of a large file, remembered across processes while the file is provably unchanged.

Hashing both production models costs ~32 s of every evaluation (36 GB), though a validator's model
files never change between evaluations. The digest is stored beside the reference cache, keyed on
the file's identity and change stamps: device, inode, size, mtime and ctime in nanoseconds. ctime
cannot be set from user space and moves on every write, rename onto or chmod, so a rewritten or
replaced file always misses. A digest is recorded only if the stamps are the same before and after
the read: a file written while it was hashed is hashed again next time.

What stamps cannot see is storage corruption that changes no stamp. The production models, the
only files this large in a basket, are therefore re-hashed tensor by tensor against their pins
before every evaluation (``evalbot.evaluator``; in parallel, ~2 s a model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 20


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _entry(cache_dir: Path, path: Path) -> Path:
    return cache_dir / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24] + ".json")


def _recall(entry: Path, stamp: list[int]) -> str | None:
    try:
        found = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("stamp") != stamp:
        return None
    digest = found.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def sha256_file(path: Path, cache_dir: Path | None = None, *, min_bytes: int = 1 << 30) -> str:
    """The file's SHA-256, read in chunks. With ``cache_dir``, for a file of at least ``min_bytes``
    (smaller ones hash in under a second: no stamp is trusted for them), a digest recorded there for
    the same unchanged file is returned without reading it, and a fresh one is recorded. Raises OSError."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        before = _stamp(st)
        entry = _entry(cache_dir, path) if cache_dir is not None and st.st_size >= min_bytes else None
        if entry is not None and (digest := _recall(entry, before)):
            return digest
        h = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            h.update(chunk)
        digest = h.hexdigest()
        after = _stamp(os.fstat(f.fileno()))
    if entry is not None and before == after:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"path": str(path), "stamp": before, "sha256": digest}))
            os.replace(tmp, entry)
        except OSError:
            pass  # a cache that cannot be written only costs the next evaluation a re-read
    return digest
