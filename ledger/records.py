"""What callers hand the ledger, checked before anything is hashed or written.

Values are normalised here (floats as ``float``, timestamps in UTC, JSON as canonical text) so the
hash computed before the insert equals the one ``verify`` recomputes from the stored row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.canonical import canonical_json, is_finite
from ledger.errors import LedgerInputError

LABELS = ("XL", "L", "M", "S", "XS", "none", "REJECT")
STATUS_COMPLETE = "complete"  # a verdict with a label
STATUS_ERROR = "error"  # the evaluation could not finish (infrastructure, not the candidate): no label
STATUSES = (STATUS_COMPLETE, STATUS_ERROR)

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Column widths, enforced here so SQLite (which ignores VARCHAR lengths) rejects what PostgreSQL would.
_WIDTH = {
    "repo": 200,
    "author": 200,
    "gpu": 200,
    "gpu_class": 100,
    "basket": 100,
    "evalbot_version": 50,
    "policy_hash": 100,
    "model": 200,
}


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LedgerInputError(f"{name}: expected a non-empty string, got {value!r}")
    if len(value) > _WIDTH[name]:
        raise LedgerInputError(f"{name}: longer than {_WIDTH[name]} characters")
    return value


def _sha(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise LedgerInputError(f"{name}: expected a full lowercase hex commit id, got {value!r}")
    return value


def _time(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise LedgerInputError(f"{name}: expected a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerInputError(
            f"{name}: timestamp has no time zone ({value.isoformat()}); pass an aware datetime"
        )
    return value.astimezone(UTC)


def _float(name: str, value: object, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not is_finite(float(value)):
        raise LedgerInputError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _json_text(name: str, value: object) -> str:
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
        return canonical_json(parsed)
    except (ValueError, TypeError) as exc:
        raise LedgerInputError(f"{name}: not a JSON document: {exc}") from None


@dataclass(frozen=True)
class MeasurementIn:
    """One basket model's numbers for an evaluation (speedups are candidate / frontier ratios)."""

    model: str
    gates_passed: bool
    tokens_per_s: float | None = None
    frontier_tokens_per_s: float | None = None
    speedup: float | None = None
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None

    def columns(self) -> dict[str, Any]:
        if not isinstance(self.gates_passed, bool):
            raise LedgerInputError(f"gates_passed: expected true or false, got {self.gates_passed!r}")
        return {
            "model": _text("model", self.model),
            "gates_passed": self.gates_passed,
            **{
                name: _float(f"{self.model}: {name}", getattr(self, name))
                for name in (
                    "tokens_per_s",
                    "frontier_tokens_per_s",
                    "speedup",
                    "speedup_ci_low",
                    "speedup_ci_high",
                )
            },
        }


@dataclass(frozen=True)
class EvaluationIn:
    """One verdict: the indexed facts plus the full verdict document."""

    repo: str
    commit_sha: str
    author: str
    gpu: str
    gpu_class: str
    basket: str
    evalbot_version: str
    policy_hash: str
    started_at: datetime
    finished_at: datetime
    status: str
    label: str | None
    verdict: Mapping[str, Any] | str
    pr: int | None = None
    base_commit: str | None = None
    frontier_commit: str | None = None
    reasons: Sequence[str] = ()
    measurements: Sequence[MeasurementIn] = field(default_factory=tuple)

    def columns(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(evaluation columns, measurement columns), validated and normalised."""
        if self.status not in STATUSES:
            raise LedgerInputError(f"status: must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.status == STATUS_COMPLETE and self.label not in LABELS:
            raise LedgerInputError(f"label: must be one of {', '.join(LABELS)}, got {self.label!r}")
        if self.status == STATUS_ERROR and self.label is not None:
            raise LedgerInputError(
                f"label: an evaluation with status 'error' has no label, got {self.label!r}"
            )
        if self.pr is not None and (isinstance(self.pr, bool) or not isinstance(self.pr, int) or self.pr < 1):
            raise LedgerInputError(f"pr: expected a positive pull-request number, got {self.pr!r}")
        if isinstance(self.reasons, str) or not all(isinstance(r, str) for r in self.reasons):
            raise LedgerInputError(f"reasons: expected a list of strings, got {self.reasons!r}")
        started, finished = _time("started_at", self.started_at), _time("finished_at", self.finished_at)
        if finished < started:
            raise LedgerInputError(
                f"finished_at ({finished.isoformat()}) is before started_at ({started.isoformat()})"
            )
        measurements = [m.columns() for m in self.measurements]
        models = [m["model"] for m in measurements]
        if len(set(models)) != len(models):
            raise LedgerInputError(f"measurements: a model appears twice in {models}")
        columns = {
            "repo": _text("repo", self.repo),
            "pr": self.pr,
            "commit_sha": _sha("commit_sha", self.commit_sha),
            "author": _text("author", self.author),
            "base_commit": _sha("base_commit", self.base_commit, optional=True),
            "frontier_commit": _sha("frontier_commit", self.frontier_commit, optional=True),
            "gpu": _text("gpu", self.gpu),
            "gpu_class": _text("gpu_class", self.gpu_class),
            "basket": _text("basket", self.basket),
            "evalbot_version": _text("evalbot_version", self.evalbot_version),
            "policy_hash": _text("policy_hash", self.policy_hash),
            "started_at": started,
            "finished_at": finished,
            "status": self.status,
            "label": self.label,
            "reasons": canonical_json(list(self.reasons)),
            "verdict": _json_text("verdict", self.verdict),
        }
        return columns, measurements


@dataclass(frozen=True)
class AdvanceIn:
    """A base-branch commit that beat ``previous_commit``, the frontier it was measured against."""

    basket: str
    gpu_class: str
    commit_sha: str
    author: str
    previous_commit: str | None
    delta: float
    advanced_at: datetime
    model_deltas: Mapping[str, float] = field(default_factory=dict)
    evaluation_seq: int | None = None

    def columns(self) -> dict[str, Any]:
        deltas = {
            _text("model", k): _float(f"model_deltas[{k}]", v, optional=False)
            for k, v in self.model_deltas.items()
        }
        if self.evaluation_seq is not None and (
            isinstance(self.evaluation_seq, bool) or not isinstance(self.evaluation_seq, int)
        ):
            raise LedgerInputError(f"evaluation_seq: expected an entry number, got {self.evaluation_seq!r}")
        return {
            "basket": _text("basket", self.basket),
            "gpu_class": _text("gpu_class", self.gpu_class),
            "commit_sha": _sha("commit_sha", self.commit_sha),
            "author": _text("author", self.author),
            "previous_commit": _sha("previous_commit", self.previous_commit, optional=True),
            "delta": _float("delta", self.delta, optional=False),
            "model_deltas": canonical_json(deltas),
            "evaluation_seq": self.evaluation_seq,
            "advanced_at": _time("advanced_at", self.advanced_at),
        }
