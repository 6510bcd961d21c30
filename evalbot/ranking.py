"""The merge queue: open PRs that hold a verified win against the live frontier, best first.

Written by the poller at every discovery (it alone knows which PRs are open) to
``<data_dir>/merge-queue.json``; ``evalbot frontier queue`` prints it. A PR ranks when its head's
verdict is a paid label (XS and up) measured against the live frontier; heads measured against an
older one are listed as re-evaluating, below. Order: label, then the headroom score (the policy's
own number), then the weakest model's speedup. ``needs_rebase`` names the slots the frontier changed
since the PR's base (:mod:`evalbot.rebase`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalbot.policy import LABELS

FILE_NAME = "merge-queue.json"


@dataclass(frozen=True)
class Candidate:
    pr: int
    sha: str
    author: str
    label: str
    score: float | None  # headroom closed on the weakest model (None: the evaluator gave none)
    speedup: float | None  # the weakest model's speedup
    measured_against: str | None  # the frontier commit of the verdict
    needs_rebase: tuple[str, ...]
    current: bool  # measured against the live frontier


def candidate(pr: int, sha: str, author: str, verdict: dict[str, Any], live: str | None) -> Candidate | None:
    """The PR's entry from its head's stored verdict (``evalbot.pipeline.verdict_to_json`` plus
    ``baseline_sha``), or None when its label is not a paid one."""
    label = verdict.get("label")
    if label not in LABELS:
        return None
    doc = verdict.get("document") or {}
    speedups = [m.get("speedup") for m in verdict.get("models", ()) if m.get("speedup") is not None]
    measured = verdict.get("baseline_sha")
    score = doc.get("score")
    return Candidate(pr, sha, author, label, float(score) if isinstance(score, int | float) else None,
                     min(speedups) if speedups else None, measured,
                     tuple((doc.get("details") or {}).get("needs_rebase") or ()), measured == live)


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Current wins first (by label, score, speedup, then PR number), then the ones being re-measured."""
    def key(c: Candidate) -> tuple[Any, ...]:
        return (not c.current, LABELS.index(c.label), -(c.score if c.score is not None else -1.0),
                -(c.speedup if c.speedup is not None else 0.0), c.pr)

    return sorted(candidates, key=key)


def write(data_dir: Path, frontier: str | None, ranked: Sequence[Candidate]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    doc = {"generated_at": datetime.now(UTC).isoformat(), "frontier": frontier,
           "queue": [asdict(c) for c in ranked]}
    fd, tmp = tempfile.mkstemp(dir=data_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    path = data_dir / FILE_NAME
    os.replace(tmp, path)
    return path


def read(data_dir: Path) -> tuple[str | None, str | None, list[Candidate]]:
    """(generated_at, frontier, ranked) from the poller's last discovery; raises ValueError naming
    what is wrong with the file, FileNotFoundError when no poller has written one."""
    path = data_dir / FILE_NAME
    try:
        doc = json.loads(path.read_text())
        queue = [_candidate(c) for c in doc["queue"]]
        return doc.get("generated_at"), doc.get("frontier"), queue
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a merge queue written by evalbot watch ({exc})") from None


def _candidate(row: dict[str, Any]) -> Candidate:
    """One queue row, each field checked for its type: a damaged file must not reach a page or a table."""
    def number(x: Any) -> float | None:
        return None if x is None else float(x)

    measured = row["measured_against"]
    return Candidate(int(row["pr"]), str(row["sha"]), str(row["author"]), str(row["label"]), number(row["score"]),
                     number(row["speedup"]), None if measured is None else str(measured),
                     tuple(str(s) for s in row["needs_rebase"]), bool(row["current"]))
