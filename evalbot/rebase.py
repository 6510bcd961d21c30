"""Needs-rebase: which of a PR's slots the frontier has changed since the PR's base.

A kernels repository is a set of slot overrides (``kernels.toml``). A slot's *implementation* in a tree
is what the runtime would run for it: the runtime's baseline when the tree does not override it,
else its manifest entry (source path, flags, scratch, launches) with the bytes of its source and of
every file under the manifest's include directories. A PR **needs a rebase** when, for a slot it
overrides, the implementation in the live frontier differs from the one in the PR's base: someone
merged work on that slot after the PR branched, so merging it would throw that work away (its
verdict, measured against the live frontier, already says whether it is still faster).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evalbot.manifest import Manifest, ManifestError, load_manifest

BASELINE = "baseline"
MAX_HASHED_BYTES = 64 << 20  # per tree: the fetch bounds trees, this bounds the hashing


def _manifest(tree: Path | None) -> Manifest | None:
    if tree is None or not (tree / "kernels.toml").is_file():
        return None
    try:
        return load_manifest(tree)
    except ManifestError:
        return None


def _include_bytes(manifest: Manifest) -> bytes:
    h = hashlib.sha256()
    budget = MAX_HASHED_BYTES
    for inc in manifest.include:
        base = manifest.root / inc
        for path in sorted(base.rglob("*")) if base.is_dir() else ():
            if path.is_symlink() or not path.is_file() or budget <= 0:
                continue
            data = path.read_bytes()[:budget]
            budget -= len(data)
            h.update(path.relative_to(manifest.root).as_posix().encode() + b"\0" + data)
    return h.digest()


def implementations(tree: Path | None) -> dict[str, str]:
    """slot -> digest of its implementation, for the slots ``tree`` overrides (others: baseline)."""
    manifest = _manifest(tree)
    if manifest is None:
        return {}
    shared = _include_bytes(manifest)
    out = {}
    for name, slot in manifest.slots.items():
        h = hashlib.sha256(shared)
        launches = tuple((ln.kernel, tuple(e.text for e in ln.grid), tuple(e.text for e in ln.block),
                          ln.shared_bytes.text, ln.pdl) for ln in slot.launches)
        h.update(repr((slot.source, slot.flags, slot.scratch_bytes.text, launches)).encode())
        source = manifest.root / slot.source
        if source.is_file() and not source.is_symlink():
            h.update(source.read_bytes()[:MAX_HASHED_BYTES])
        out[name] = h.hexdigest()
    return out


def needs_rebase(candidate: Path, base: Path | None, frontier: Path | None) -> list[str]:
    """The slots ``candidate`` overrides whose implementation differs between ``base`` and
    ``frontier`` (sorted); empty when the base is the frontier or the candidate overrides nothing."""
    mine = implementations(candidate)
    if not mine or base == frontier:
        return []
    before, now = implementations(base), implementations(frontier)
    return sorted(s for s in mine if before.get(s, BASELINE) != now.get(s, BASELINE))
