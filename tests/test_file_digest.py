"""The cross-process digest cache: a hit needs the same unchanged file; any rewrite misses."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from reference_runtime.file_digest import sha256_file


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_digest_is_hashlibs_and_is_recorded(tmp_path: Path) -> None:
    f, cache = tmp_path / "m.gguf", tmp_path / "digests"
    want = _write(f, os.urandom(3 << 20))
    assert sha256_file(f) == want
    assert not cache.exists()
    assert sha256_file(f, cache, min_bytes=0) == want
    (entry,) = cache.iterdir()
    assert json.loads(entry.read_text())["sha256"] == want


def test_a_hit_does_not_read_the_file(tmp_path: Path) -> None:
    f, cache = tmp_path / "m.gguf", tmp_path / "digests"
    want = _write(f, b"weights" * 1000)
    sha256_file(f, cache, min_bytes=0)
    (entry,) = cache.iterdir()
    # The recorded digest is what a hit returns: forge it to prove the file was not re-read.
    doc = json.loads(entry.read_text())
    entry.write_text(json.dumps(doc | {"sha256": "0" * 64}))
    assert sha256_file(f, cache, min_bytes=0) == "0" * 64
    assert sha256_file(f) == want


@pytest.mark.parametrize("change", ["same-size rewrite", "append", "replace by rename", "touch"])
def test_any_change_to_the_file_misses(tmp_path: Path, change: str) -> None:
    f, cache = tmp_path / "m.gguf", tmp_path / "digests"
    _write(f, b"a" * 4096)
    sha256_file(f, cache, min_bytes=0)
    st = f.stat()
    if change == "same-size rewrite":
        want = _write(f, b"b" * 4096)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with mtime put back, ctime moved
    elif change == "append":
        with open(f, "ab") as out:
            out.write(b"x")
        want = hashlib.sha256(b"a" * 4096 + b"x").hexdigest()
    elif change == "replace by rename":
        want = _write(tmp_path / "new", b"c" * 4096)
        os.replace(tmp_path / "new", f)
    else:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        want = hashlib.sha256(b"a" * 4096).hexdigest()
    assert sha256_file(f, cache, min_bytes=0) == want


def test_a_corrupt_or_foreign_entry_is_ignored(tmp_path: Path) -> None:
    f, cache = tmp_path / "m.gguf", tmp_path / "digests"
    want = _write(f, b"z" * 100)
    sha256_file(f, cache, min_bytes=0)
    (entry,) = cache.iterdir()
    for junk in ("{not json", "[]", json.dumps({"stamp": "x", "sha256": 5})):
        entry.write_text(junk)
        assert sha256_file(f, cache, min_bytes=0) == want


def test_an_unwritable_cache_still_answers(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    want = _write(f, b"q" * 100)
    blocker = tmp_path / "digests"
    blocker.write_text("a file where the directory should be")
    assert sha256_file(f, blocker, min_bytes=0) == want


def test_small_files_are_always_read(tmp_path: Path) -> None:
    f, cache = tmp_path / "m.gguf", tmp_path / "digests"
    want = _write(f, b"s" * 1000)
    assert sha256_file(f, cache, min_bytes=1001) == want
    assert not cache.exists()
