"""The one interface between the poller and the evaluation pipeline.

The poller hands an :class:`Evaluator` a :class:`Job` (what to fetch and what to compare it with) and
gets back a :class:`Verdict`. The poller never looks inside a verdict beyond these fields, so the eval
harness can grow without the poller changing. A failed build or gate is a verdict (``REJECT``), not
an exception; an exception means the evaluation itself could not run and will be retried.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from evalbot.config import Config
from evalbot.errors import EvalbotError

LABELS = ("XL", "L", "M", "S", "XS", "none", "REJECT")
# evalbot.evaluator builds, gates and benchmarks each job; ``evalbot watch --evaluator`` overrides.
DEFAULT_EVALUATOR = "evalbot.evaluator:create"


@dataclass(frozen=True)
class Job:
    """One commit to evaluate: a PR head (``pr_number`` set) or a new base-branch commit."""

    repo: str  # "owner/name" of the base repository
    sha: str
    clone_url: str  # the base repository; PR heads (forks too) are fetchable there by ``fetch_ref``
    fetch_ref: str  # "refs/pull/7/head" or "refs/heads/main"
    author: str
    base_ref: str
    base_sha: str
    baseline_sha: str | None  # the frontier commit to compare against; None: no frontier yet
    pr_number: int | None = None

    @property
    def kind(self) -> str:
        return "pr" if self.pr_number is not None else "base"

    def describe(self) -> str:
        where = f"PR #{self.pr_number}" if self.pr_number is not None else f"{self.base_ref}"
        return f"{self.repo} {where} @ {self.sha[:12]}"


@dataclass(frozen=True)
class ModelResult:
    """One basket model's numbers; ``speedup`` is candidate over baseline decode tokens/s (1.03: 3 %)."""

    model: str
    gates_passed: bool
    tokens_per_s: float | None = None
    baseline_tokens_per_s: float | None = None
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Verdict:
    """What an evaluation concluded. ``document`` is the full verdict JSON (schema owned by the harness)."""

    label: str
    reasons: tuple[str, ...]
    markdown: str
    gpu: str  # the GPU's name, as the runtime reports it
    policy_hash: str
    document: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[ModelResult, ...] = ()  # empty when nothing was measured (e.g. a build REJECT)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"verdict label {self.label!r} is not one of {', '.join(LABELS)}")

    @property
    def verified(self) -> bool:
        """Passed every gate: the commit may become (or stay) the frontier."""
        return self.label != "REJECT"

    def summary(self) -> str:
        return self.reasons[0] if self.reasons else self.label


def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
    return asdict(verdict)


def verdict_from_json(data: Mapping[str, Any]) -> Verdict:
    models = tuple(
        ModelResult(**{**m, "speedup_ci": tuple(m["speedup_ci"]) if m.get("speedup_ci") else None})
        for m in data.get("models", ())
    )
    return Verdict(
        label=data["label"],
        reasons=tuple(data["reasons"]),
        markdown=data["markdown"],
        gpu=data["gpu"],
        policy_hash=data["policy_hash"],
        document=data.get("document", {}),
        models=models,
    )


class Cancelled(Exception):
    """Raised by an evaluator that saw ``cancel`` set and abandoned the job (nothing recorded)."""


class Evaluator(Protocol):
    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        """Evaluate ``job``; check ``cancel`` between steps and raise :class:`Cancelled` when it is set."""
        ...


EvaluatorFactory = Callable[[Config], Evaluator]


def load_evaluator(spec: str, config: Config) -> Evaluator:
    """Build the evaluator named ``module:factory`` (the factory takes the :class:`Config`)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise EvalbotError(f"evaluator {spec!r}: expected 'module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvalbotError(f"evaluator {spec!r}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EvalbotError(f"evaluator {spec!r}: {module_name} has no callable {attr!r}")
    evaluator = factory(config)
    if not callable(getattr(evaluator, "evaluate", None)):
        raise EvalbotError(f"evaluator {spec!r}: {attr}(config) returned an object without evaluate()")
    return evaluator
