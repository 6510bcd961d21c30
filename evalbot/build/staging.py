"""Copy exactly what one slot's compile may see into a fresh directory, and hash it.

The compiler gets the slot's source, the manifest's ``include`` directories and the runtime's slot
ABI header, nothing else of the contributor's tree. That keeps the build cache exact (its key hashes
every file the compile could read) and keeps the sandbox's source mount free of anything the
manifest did not declare. Symlinks are resolved inside the tree and copied as plain files; any
leading outside is refused, and so is a file name holding control or invisible characters.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from evalbot.manifest import Manifest, ManifestError, SlotOverride, refuse_unprintable, resolve_in_tree
from reference_runtime.runtime.abi import HEADER_NAME, header_path

MAX_FILES = 2000
MAX_BYTES = 64 * 2**20
# Reserved directory of every staged tree: the runtime's slot header, so that sources can
# `#include "evalbot_slots.h"` (the build passes -I for it before the manifest's include dirs).
ABI_DIR = ".evalbot-abi"


def stage_slot(manifest: Manifest, override: SlotOverride, dest: Path) -> dict[str, str]:
    """Write the slot's visible files under ``dest``; return ``{relative path: sha256}``."""
    label = f"{manifest.path}: slot {override.slot}"
    wanted: dict[str, Path] = {}
    for i, rel in enumerate(manifest.include):
        for name, real in _walk(manifest.root, rel, f"{manifest.path}: include[{i}]"):
            wanted[name] = real
    wanted[override.source] = resolve_in_tree(
        manifest.root, override.source, lambda msg: ManifestError(f"{label}: source: {msg}"))
    if any(PurePosixPath(name).parts[0] == ABI_DIR for name in wanted):
        raise ManifestError(f"{label}: the directory name {ABI_DIR!r} is reserved for the slot ABI header")
    wanted[f"{ABI_DIR}/{HEADER_NAME}"] = header_path()
    if len(wanted) > MAX_FILES:
        raise ManifestError(f"{label}: more than {MAX_FILES} files to stage (source plus include directories)")
    digests: dict[str, str] = {}
    total = 0
    dest.mkdir(parents=True, mode=0o755)
    for name in sorted(wanted):
        data = wanted[name].read_bytes()
        total += len(data)
        if total > MAX_BYTES:
            raise ManifestError(f"{label}: source plus include directories exceed {MAX_BYTES} bytes")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(data)
        target.chmod(0o644)
        digests[name] = hashlib.sha256(data).hexdigest()
    # Sandbox users other than the owner must be able to read the staged tree.
    for directory in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)
    return digests


def _walk(root: Path, rel: str, where: str) -> list[tuple[str, Path]]:
    """Regular files under include directory ``rel`` as (tree-relative name, real path)."""
    def refuse(msg: str) -> ManifestError:
        return ManifestError(f"{where}: {msg}")

    top = resolve_in_tree(root, rel, refuse)
    found: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(top):
        here = Path(current)
        for name in [*dirs, *files]:
            path = here / name
            tree_name = (Path(rel) / path.relative_to(top)).as_posix()
            # A name starting with '-' is harmless here (files are only #included, never on the
            # command line), but one that does not print plainly would reach reasons and comments.
            refuse_unprintable(tree_name, refuse)
            if path.is_symlink():
                real = resolve_in_tree(root, tree_name, refuse)
                if real.is_dir():
                    raise refuse(f"{tree_name!r} is a directory symlink; list its target in include instead")
                found.append((tree_name, real))
            elif name in files and path.is_file():
                found.append((tree_name, path))
        if len(found) > MAX_FILES:
            raise refuse(f"more than {MAX_FILES} files")
    return found
