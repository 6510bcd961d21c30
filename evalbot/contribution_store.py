"""The contributions this validator has evaluated, kept for copy detection (:mod:`evalbot.copies`).

One JSON file per PR head under ``<cache_dir>/contributions/<repo>/``: its PR number, author, commit,
the kernel sources it added or changed, and when the head was **first seen**. A head is compared with
the heads of other authors first seen before it, open or merged since: a copy is always seen after
its original (a copy force-pushed onto an older, empty PR is a new head, seen later), and a
re-evaluation when the frontier moves keeps each head's first-seen time, so the original never
becomes "the copy" of what was copied from it. Bounded: the :data:`MAX_KEPT` heads seen last per
repository, each at most :data:`evalbot.copies.MAX_SOURCE_BYTES` of sources. A damaged file is
skipped and removed, never an error: the store is a cache of public PR contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from evalbot.copies import Contribution

MAX_KEPT = 1000  # at most 256 MiB per repository, and a check of at most 1000 comparisons


class ContributionStore:
    def __init__(self, cache_dir: Path, repo: str) -> None:
        self.dir = cache_dir / "contributions" / hashlib.sha256(repo.encode()).hexdigest()[:16]

    def _docs(self) -> list[dict[str, Any]]:
        out = []
        for path in self.dir.glob("*.json") if self.dir.is_dir() else ():
            try:
                doc = json.loads(path.read_text())
                doc["first_seen"] = float(doc["first_seen"])
                doc["contribution"] = Contribution(doc["pr"], str(doc["author"]), str(doc["commit"]),
                                                   {str(k): str(v) for k, v in doc["sources"].items()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                path.unlink(missing_ok=True)
                continue
            out.append(doc)
        return sorted(out, key=lambda d: d["first_seen"])

    def first_seen(self, commit: str) -> float | None:
        path = self.dir / f"{commit}.json"
        try:
            return float(json.loads(path.read_text())["first_seen"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self, c: Contribution) -> None:
        """Keep ``c`` (its first-seen time stays that of the head's first record)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        seen = self.first_seen(c.commit) or time.time()
        doc = {"pr": c.pr, "author": c.author, "commit": c.commit, "sources": dict(c.sources), "first_seen": seen}
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.dir / f"{c.commit}.json")  # a reader never sees half a file
        for old in self._docs()[:-MAX_KEPT]:
            (self.dir / f"{old['commit']}.json").unlink(missing_ok=True)

    def earlier(self, commit: str) -> list[Contribution]:
        """The contributions first seen before ``commit`` (now, if it has no record yet), oldest first."""
        cutoff = self.first_seen(commit) or time.time()
        return [d["contribution"] for d in self._docs() if d["commit"] != commit and d["first_seen"] < cutoff]
