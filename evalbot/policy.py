"""The label: a pure, deterministic function of the measurements and a versioned, hashed policy file.

    REJECT  the build failed, a gate failed, or the candidate is significantly slower than the
            frontier by more than the guard at any (model, context), the long-context guards included
    none    no significant win on every basket model
    XS…XL   the fraction of the remaining roofline headroom the candidate closes, from the
            conservative end of each interval, averaged over the scored contexts, minimum over models
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from evalbot.errors import EvalbotError
from harness.gates import GateLimits
from harness.kernel_gates import TOLERANCE_FAMILIES
from harness.measurements import Measurements, SpeedCell
from harness.stats import SamplingRule

LABELS = ("XL", "L", "M", "S", "XS")  # best first
ALL_LABELS = (*LABELS, "none", "REJECT")


class PolicyError(EvalbotError):
    pass


@dataclass(frozen=True)
class CopyRule:
    """[copies]: when a contribution is a derivative of an earlier one (:mod:`evalbot.copies`)."""
    warn: float  # a match at or above this is reported in the comment
    block: float  # at or above this the verdict is `none`
    noise: int  # k: matches shorter than this many filtered characters are ignored
    guarantee: int  # matches at least this long are always found (winnowing window = guarantee - noise + 1)
    min_coverage: int  # a contribution with less fingerprinted code than this is too small to call either way


@dataclass(frozen=True)
class SanitizerRule:
    tools: tuple[str, ...]  # compute-sanitizer tools run on every overridden slot's gate cases
    fuzz_cases: int  # fuzzed shapes under the sanitizer, besides the basket's own
    timeout_s: float  # per (slot, tool): a sanitizer run past it is the validator's fault, retried


SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")


@dataclass(frozen=True)
class Policy:
    version: int
    sha256: str
    source: str
    top1_min: float
    kl_mean_max: float
    kl_p99_max: float
    kl_max_max: float
    ppl_ratio_max: float
    confidence: float
    alpha: float
    regression_guard: float
    contexts: tuple[int, ...]  # decode context lengths benchmarked per model
    budget_s: float  # benchmark time per (model, context)
    # Long-context decode guards: benchmarked like `contexts`, but only the regression guard (and the
    # spot check, KV integrity) applies; they do not enter the score. Their own, shorter budget.
    guard_contexts: tuple[int, ...]
    guard_budget_s: float
    guard_halfwidth: float
    target_halfwidth: float  # stop sampling once the interval's relative half-width is below this
    min_pairs: int
    block_pairs: int  # pairs per block; the graphs are captured afresh for every block
    repeat_audit_margin: float  # audit:repeat: how much more than the frontier a candidate may gain from repeats
    repeat_audit_pairs: int
    reference_efficiency: float
    thresholds: dict[str, float]  # label -> minimum headroom closed
    kernel_tolerances: dict[str, float]  # slot family (harness.kernel_gates.TOLERANCE_FAMILIES) -> limit
    kernel_fuzz_cases: int  # fuzzed shapes per gated slot, besides the basket's own
    kernel_repeats: int  # each gate run launched this many times: every launch graded, differences reported
    sanitizer: SanitizerRule
    copies: CopyRule

    @property
    def gate_n_ctx(self) -> int:
        """The KV-cache capacity of the kernel gates' attention shapes: the longest scored context,
        so a kernel is checked at the lengths it is paid for (the guards' 128k would make the float64
        oracle the evaluation's slowest stage)."""
        return max(self.contexts)


def _number(doc: dict[str, Any], section: str, key: str, source: str, lo: float, hi: float) -> float:
    try:
        value = doc[section][key]
    except KeyError:
        raise PolicyError(f"{source}: [{section}] {key} is missing") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise PolicyError(f"{source}: [{section}] {key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _integer(doc: dict[str, Any], section: str, key: str, source: str, lo: int, hi: int) -> int:
    try:
        value = doc[section][key]
    except KeyError:
        raise PolicyError(f"{source}: [{section}] {key} is missing") from None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PolicyError(f"{source}: [{section}] {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _kernel_tolerances(doc: dict[str, Any], source: str) -> dict[str, float]:
    section = doc.get("kernel_gates")
    if not isinstance(section, dict):
        raise PolicyError(f"{source}: [kernel_gates] is missing")
    unknown = sorted(set(section) - {*TOLERANCE_FAMILIES, "fuzz_cases", "repeats"})
    if unknown:
        raise PolicyError(f"{source}: [kernel_gates] unknown key {unknown[0]!r} (known: fuzz_cases, repeats, "
                          f"{', '.join(TOLERANCE_FAMILIES)})")
    return {name: _number(doc, "kernel_gates", name, source, 0.0, 1.0) for name in TOLERANCE_FAMILIES}


def _sanitizer(doc: dict[str, Any], source: str) -> SanitizerRule:
    section = doc.get("sanitizer")
    if not isinstance(section, dict):
        raise PolicyError(f"{source}: [sanitizer] is missing")
    unknown = sorted(set(section) - {"tools", "fuzz_cases", "timeout_s"})
    if unknown:
        raise PolicyError(f"{source}: [sanitizer] unknown key {unknown[0]!r} (known: tools, fuzz_cases, timeout_s)")
    tools = section.get("tools")
    if (not isinstance(tools, list) or not all(isinstance(t, str) and t in SANITIZER_TOOLS for t in tools)
            or len(set(tools)) != len(tools)):
        raise PolicyError(f"{source}: [sanitizer] tools must be a list of distinct names from "
                          f"{', '.join(SANITIZER_TOOLS)}, got {tools!r}")
    return SanitizerRule(tuple(tools), _integer(doc, "sanitizer", "fuzz_cases", source, 0, 100),
                         _number(doc, "sanitizer", "timeout_s", source, 1.0, 7200.0))


def _contexts(doc: dict[str, Any], source: str, key: str = "contexts", least: int = 1) -> tuple[int, ...]:
    value = doc.get("speed", {}).get(key, [] if least == 0 else None)
    if (not isinstance(value, list) or len(value) < least
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20 for v in value)
            or len(set(value)) != len(value)):
        raise PolicyError(f"{source}: [speed] {key} must be a list of distinct positive integers, got {value!r}")
    return tuple(value)


def _guards(doc: dict[str, Any], source: str, contexts: tuple[int, ...]) -> tuple[tuple[int, ...], float, float]:
    """``[speed] guard_contexts`` (optional; none by default) and, when there are some, their budget."""
    guards = _contexts(doc, source, "guard_contexts", least=0)
    if not guards:
        return (), 0.0, 0.0
    if set(guards) & set(contexts) or min(guards) <= max(contexts):
        raise PolicyError(f"{source}: [speed] guard_contexts must all be longer than every scored context "
                          f"({max(contexts)}), got {list(guards)!r}")
    return (guards, _number(doc, "speed", "guard_budget_s", source, 0.1, 3600.0),
            _number(doc, "speed", "guard_halfwidth", source, 1e-5, 0.5))


def parse_policy(data: bytes, source: str) -> Policy:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    version = doc.get("version")
    if version != 1:
        raise PolicyError(f"{source}: policy version {version!r} is not one this evalbot reads (1)")
    policy = Policy(
        version=1,
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
        top1_min=_number(doc, "gates", "top1_min", source, 0.0, 1.0),
        kl_mean_max=_number(doc, "gates", "kl_mean_max", source, 0.0, math.inf),
        kl_p99_max=_number(doc, "gates", "kl_p99_max", source, 0.0, math.inf),
        kl_max_max=_number(doc, "gates", "kl_max_max", source, 0.0, math.inf),
        ppl_ratio_max=_number(doc, "gates", "ppl_ratio_max", source, 1.0, math.inf),
        confidence=_number(doc, "speed", "confidence", source, 0.5, 0.9999),
        alpha=_number(doc, "speed", "alpha", source, 1e-6, 0.5),
        regression_guard=_number(doc, "speed", "regression_guard", source, 0.0, 1.0),
        contexts=_contexts(doc, source),
        guard_contexts=(),
        guard_budget_s=0.0,
        guard_halfwidth=0.0,
        budget_s=_number(doc, "speed", "budget_s", source, 0.1, 3600.0),
        target_halfwidth=_number(doc, "speed", "target_halfwidth", source, 1e-5, 0.5),
        min_pairs=int(_number(doc, "speed", "min_pairs", source, 5, 100000)),
        block_pairs=int(_number(doc, "speed", "block_pairs", source, 2, 10000)),
        repeat_audit_margin=_number(doc, "speed", "repeat_audit_margin", source, 0.0, 1.0),
        repeat_audit_pairs=_integer(doc, "speed", "repeat_audit_pairs", source, 2, 1000),
        reference_efficiency=_number(doc, "labels", "reference_efficiency", source, 0.0, 0.99),
        thresholds={name: _number(doc, "labels", name, source, 0.0, 1.0) for name in LABELS},
        kernel_tolerances=_kernel_tolerances(doc, source),
        kernel_fuzz_cases=_integer(doc, "kernel_gates", "fuzz_cases", source, 0, 1000),
        kernel_repeats=_integer(doc, "kernel_gates", "repeats", source, 1, 100),
        sanitizer=_sanitizer(doc, source),
        copies=CopyRule(
            warn=_number(doc, "copies", "warn", source, 0.0, 1.0),
            block=_number(doc, "copies", "block", source, 0.0, 1.0),
            noise=_integer(doc, "copies", "noise", source, 5, 1000),
            guarantee=_integer(doc, "copies", "guarantee", source, 5, 1000),
            min_coverage=_integer(doc, "copies", "min_coverage", source, 0, 1_000_000),
        ),
    )
    guards, guard_budget_s, guard_halfwidth = _guards(doc, source, policy.contexts)
    policy = replace(policy, guard_contexts=guards, guard_budget_s=guard_budget_s, guard_halfwidth=guard_halfwidth)
    ordered = [policy.thresholds[name] for name in reversed(LABELS)]
    if ordered != sorted(ordered) or len(set(ordered)) != len(ordered):
        raise PolicyError(f"{source}: [labels] thresholds must increase strictly from XS to XL")
    if policy.copies.warn > policy.copies.block or policy.copies.guarantee < policy.copies.noise:
        raise PolicyError(f"{source}: [copies] needs warn <= block and noise <= guarantee")
    return policy


# The shipped policy of each basket set: its gates are calibrated on that set's models.
DEFAULT_POLICIES = {"tiny": "v1.toml", "production": "v2.toml"}


def policy_bytes(path: Path | None = None, basket_set: str = "tiny") -> tuple[bytes, str]:
    """The bytes of ``path``, else of the shipped policy of ``basket_set``, and where they are from."""
    if path is None:
        name = f"policies/{DEFAULT_POLICIES[basket_set]}"
        return resources.files("evalbot").joinpath(name).read_bytes(), f"evalbot/{name}"
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from None


def load_policy(path: Path | None = None, basket_set: str = "tiny") -> Policy:
    """``path``, else the shipped policy of ``basket_set``."""
    return parse_policy(*policy_bytes(path, basket_set))


def gate_limits(policy: Policy) -> GateLimits:
    return GateLimits(policy.top1_min, policy.kl_mean_max, policy.kl_p99_max, policy.kl_max_max, policy.ppl_ratio_max)


def sampling_rule(policy: Policy) -> SamplingRule:
    return SamplingRule(target_halfwidth=policy.target_halfwidth, confidence=policy.confidence,
                        min_pairs=policy.min_pairs, budget_s=policy.budget_s, block_pairs=policy.block_pairs)


def guard_rule(policy: Policy) -> SamplingRule:
    """The long-context guards' rule: a shorter budget, and the interval only as tight as the
    regression guard needs (a slowdown of twice the guard is caught when the half-width is below it)."""
    return replace(sampling_rule(policy), budget_s=policy.guard_budget_s, target_halfwidth=policy.guard_halfwidth)


@dataclass(frozen=True)
class Decision:
    label: str
    reasons: tuple[str, ...]
    score: float | None  # headroom closed (min over models); None when rejected
    per_model: dict[str, float]


def _cell_closed(cell: SpeedCell) -> float:
    """Headroom closed at the interval's conservative end (lower speedup bound)."""
    t_candidate = cell.t_frontier_s / cell.comparison.ci_low
    headroom = cell.t_frontier_s - cell.t_roofline_s
    return (cell.t_frontier_s - t_candidate) / headroom if headroom > 0 else 0.0


def label(m: Measurements, policy: Policy) -> Decision:
    if not m.build_ok:
        return Decision("REJECT", (f"build failed: {m.build_reason}",), None, {})
    failed = [g for g in m.gates if not g.passed]
    if failed:
        reasons = tuple(
            f"gate {g.name} failed on {g.model}: {g.value:.6g} (limit {g.limit:.6g})"
            + (f" — {g.detail}" if g.detail else "")
            for g in failed
        )
        return Decision("REJECT", reasons, None, {})
    if not m.cells:
        return Decision("REJECT", ("no speed measurements",), None, {})

    regressions = [
        c for c in m.cells
        if c.comparison.ci_high < 1.0 - policy.regression_guard and c.comparison.p_value < policy.alpha
    ]
    if regressions:
        return Decision("REJECT", tuple(
            f"{c.model} at context {c.context}: {100 * (1 - c.comparison.speedup):.2f}% slower "
            f"(speedup {c.comparison.speedup:.4f}, {policy.confidence:.0%} CI "
            f"[{c.comparison.ci_low:.4f}, {c.comparison.ci_high:.4f}]), beyond the {policy.regression_guard:.1%} guard"
            for c in regressions
        ), None, {})

    by_model: dict[str, list[float]] = defaultdict(list)
    for cell in m.cells:
        if cell.guard:
            continue
        by_model[cell.model].append(_cell_closed(cell))
    per_model = {model: sum(v) / len(v) for model, v in sorted(by_model.items())}
    score = min(per_model.values())
    weakest = min(per_model, key=lambda k: per_model[k])
    for name in LABELS:
        if score >= policy.thresholds[name]:
            return Decision(name, (
                f"closes {score:.1%} of the remaining roofline headroom on its weakest model ({weakest}); "
                f"{name} needs {policy.thresholds[name]:.1%}",
            ), score, per_model)
    return Decision("none", (
        f"no significant win on every model: weakest is {weakest}, {score:.2%} of the headroom at the "
        f"conservative end (XS needs {policy.thresholds['XS']:.1%})",
    ), score, per_model)


def with_gates(text: str, limits: Mapping[str, float], comment: Sequence[str]) -> str:
    """The policy file ``text`` with its ``[gates]`` values set to ``limits`` and that section's
    comment replaced by ``comment`` (one line each): what ``evalbot calibrate --policy-out`` writes.
    Every other byte is kept, so the file stays reviewable as a diff."""
    out: list[str] = []
    section, missing = "", set(limits)
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped.strip("[]").strip()
            out.append(line)
            if section == "gates":
                out.extend(f"# {c}" for c in comment)
            continue
        if section == "gates":
            if stripped.startswith("#"):
                continue
            key = stripped.split("=", 1)[0].strip()
            if key in limits:
                out.append(f"{key} = {limits[key]:.7g}")  # 1 + 3.0e-3 keeps its digits
                missing.discard(key)
                continue
        out.append(line)
    if missing:
        raise PolicyError(f"the policy has no [gates] {', '.join(sorted(missing))} to set")
    return "\n".join(out) + "\n"
