"""The contributions this validator has evaluated, kept for copy detection (:mod:`evalbot.copies`).

One JSON file per PR head under ``<cache_dir>/contributions/<repo>/``: its PR number, author, commit and
the kernel sources it added or changed. A later PR by another author is compared with every one of
them, open or merged since. Bounded: at most :data:`MAX_KEPT` per repository (the oldest go), each
file at most what :data:`evalbot.copies.MAX_SOURCE_BYTES` lets in. A damaged file is skipped and
removed, never an error: the store is a cache of public PR contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from evalbot.copies import Contribution

MAX_KEPT = 1000  # at most 256 MiB per repository, and a check of at most 1000 comparisons


class ContributionStore:
    def __init__(self, cache_dir: Path, repo: str) -> None:
        self.dir = cache_dir / "contributions" / hashlib.sha256(repo.encode()).hexdigest()[:16]

    def record(self, c: Contribution) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = {"pr": c.pr, "author": c.author, "commit": c.commit, "sources": dict(c.sources)}
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.dir / f"{c.commit}.json")  # a reader never sees half a file
        kept = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-MAX_KEPT]:
            old.unlink(missing_ok=True)

    def earlier(self, commit: str) -> list[Contribution]:
        """Every recorded contribution but ``commit``'s, oldest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            if path.stem == commit:
                continue
            try:
                doc = json.loads(path.read_text())
                c = Contribution(doc["pr"], str(doc["author"]), str(doc["commit"]),
                                 {str(k): str(v) for k, v in doc["sources"].items()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                path.unlink(missing_ok=True)
                continue
            out.append(c)
        return out
