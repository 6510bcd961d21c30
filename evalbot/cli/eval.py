"""``evalbot eval <commit>``: evaluate one commit of a kernels repo against its baseline, as a validator
would, and print the verdict. Exit 0: verdict XL…none; 1: REJECT; 2: the evaluation could not run.
``evalbot calibrate``: the noise floor between correct implementations, and the gate limits it implies."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from evalbot.config import Config, load_config
from evalbot.errors import EvalbotError

console = Console()
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="policy TOML (default: the shipped v1)")]


def _run_git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def _git(repo: Path, *args: str) -> str:
    done = _run_git(repo, *args)
    if done.returncode != 0:
        raise EvalbotError(f"git {' '.join(args)} in {repo}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def default_branch(repo: Path) -> str:
    """origin's HEAD when the checkout has one, else main or master, whichever exists."""
    if head := _run_git(repo, "symbolic-ref", "--short", "refs/remotes/origin/HEAD").stdout.strip():
        return head
    for name in ("main", "master"):
        if _run_git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}").returncode == 0:
            return name
    raise EvalbotError(f"{repo}: no origin/HEAD, main or master branch to take the baseline from; pass --baseline")


def resolve(repo: Path, rev: str) -> str:
    if rev.startswith("-"):
        raise EvalbotError(f"{rev!r} looks like an option, not a commit")
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except EvalbotError:
        raise EvalbotError(f"{rev!r} is not a commit, branch or tag of {repo}") from None


def ledger_frontier(cfg: Config) -> str | None:
    """The frontier commit of this basket and GPU class in the configured ledger, or None when no
    ledger is configured or it has no frontier yet."""
    if not cfg.ledger.url:
        return None
    from evalbot.ledger_recorder import open_recorder

    recorder, _ = open_recorder(cfg, read_only=True)
    return recorder.frontier(cfg.github.repo, cfg.github.base_branch)


@contextmanager
def _phases() -> Iterator[object]:
    """One progress line per phase (build, kernel gates, each model's gates and benchmark)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        current: list[int] = []

        def say(message: str) -> None:
            if current:
                progress.update(current[-1], completed=1, total=1)
            current.append(progress.add_task(message, total=None))

        yield say
        if current:
            progress.update(current[-1], completed=1, total=1)


def eval_command(
    commit: Annotated[str, typer.Argument(help="commit, branch or tag of the kernels repo")] = "HEAD",
    repo: Annotated[Path, typer.Option(help="the kernels repo checkout")] = Path("."),
    baseline: Annotated[str | None, typer.Option(
        help="commit to compare against (default: the ledger's frontier when [ledger] url is configured, "
             "else the merge-base with the default branch); 'runtime' for the runtime's own baseline kernels")] = None,
    build_only: Annotated[bool, typer.Option("--build-only", help="compile and check the manifest only")] = False,
    arch: Annotated[str | None, typer.Option(help="GPU arch for --build-only (default sm_90)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the verdict document here")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="write the PR comment here")] = None,
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
) -> None:
    """Evaluate COMMIT against its baseline: build, gates, interleaved benchmark, label."""
    from evalbot import build_comment
    from evalbot import verdict as verdict_doc
    from evalbot.evaluator import NO_GPU, evaluate_trees, gpu_available
    from evalbot.evaluator import build_only as build_only_tree
    from evalbot.fetch import Mirror
    from evalbot.policy import load_policy

    cfg = load_config(config)
    pol = load_policy(policy, basket_set=cfg.basket.set)
    repo = repo.expanduser().resolve()
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise EvalbotError(f"{repo} is not a git repository (pass --repo)")
    # The arguments first: a typo in a commit is worth reporting even on a box without a GPU.
    sha = resolve(repo, commit)
    base_sha = resolve(repo, baseline) if baseline and baseline != "runtime" else None
    if not build_only and not gpu_available():
        raise EvalbotError(NO_GPU)
    if not baseline:
        if (frontier := ledger_frontier(cfg)) is not None:
            try:
                base_sha = resolve(repo, frontier)
            except EvalbotError:
                raise EvalbotError(f"the ledger's frontier {frontier} is not in {repo}: fetch the base branch, "
                                   "or pass --baseline") from None
            console.print(f"baseline: the ledger's frontier {frontier[:12]}", markup=False)
        else:
            base_sha = _git(repo, "merge-base", sha, default_branch(repo))
    mirror = Mirror(cfg.cache_dir, str(repo), timeout_s=cfg.build.fetch_timeout_s)
    mirror.fetch_commit(sha, refs=(commit,))
    if base_sha:
        mirror.fetch_commit(base_sha, refs=(baseline,) if baseline else ())
    console.print(f"evaluating [bold]{sha[:12]}[/] against "
                  + (f"[bold]{base_sha[:12]}[/]" if base_sha else "the runtime's baseline kernels"))
    scratch = cfg.cache_dir / "trees"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        cand = mirror.export(sha, Path(tmp) / "candidate")
        if build_only:
            with _phases() as say:
                report = build_only_tree(cfg, cand, arch or "sm_90", say, sha)  # type: ignore[arg-type]
            if json_out:
                json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
            if markdown_out:
                markdown_out.write_text(build_comment.markdown(report.to_dict()))
            if report.ok:
                console.print(f"[bold green]build OK[/] ({len(report.slots)} slots); nothing was gated or measured")
                raise typer.Exit(0)
            for reason in report.reasons:
                console.print(f"[bold red]REJECT[/] {escape(reason)}", soft_wrap=True)
            raise typer.Exit(1)
        front = mirror.export(base_sha, Path(tmp) / "frontier") if base_sha else None
        commits = verdict_doc.Commits(str(repo), sha, base_sha, None)
        with _phases() as say:
            outcome = evaluate_trees(cfg, cand, front, commits, policy=pol, progress=say)  # type: ignore[arg-type]
    doc = outcome.document
    if json_out:
        json_out.write_text(verdict_doc.to_json(doc))
    if markdown_out:
        markdown_out.write_text(verdict_doc.markdown(doc))
    verdict_doc.print_report(doc, console)
    raise typer.Exit(1 if doc["label"] == "REJECT" else 0)


PROBE_STEPS = 8  # decoded steps compared at the end of the long-context probe

_GATE_NAMES = ("top1_min", "kl_mean_max", "kl_p99_max", "kl_max_max", "ppl_ratio_max")


def gates_snippet(limits: object) -> str:
    """The proposed [gates] as TOML to paste, to the policy file's precision (a 3-digit rounding once
    printed ppl_ratio_max 1.003016 as 1, a limit the baseline itself fails)."""
    return "[gates]\n" + "\n".join(f"{k} = {getattr(limits, k):.7g}" for k in _GATE_NAMES)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    runs: Annotated[int, typer.Option(help="teacher-forced runs of the baseline per model")] = 2,
    margin: Annotated[float, typer.Option(help="limits sit this many times beyond the noise")] = 4.0,
    kernel_margin: Annotated[float, typer.Option(help="the same for the per-slot kernel tolerances")] = 10.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the measurements and proposals here")] = None,
    policy_out: Annotated[Path | None, typer.Option(
        "--policy-out", help="write the policy with its [gates] set to the proposed limits here")] = None,
    long_context: Annotated[int, typer.Option(
        help="also decode this many positions per model and compare the last steps with fp64 (0: skip)")] = 0,
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
) -> None:
    """Measure the noise floor of correct implementations (the baseline runtime against the fp64
    reference; the baseline kernels against the fp64 slot math) and propose gate limits."""
    from dataclasses import asdict

    from rich.table import Table

    from evalbot.evaluator import NO_GPU, basket_models, device_arch, gpu_available, holdout_seed
    from evalbot.policy import gate_limits, load_policy, sampling_rule
    from harness.calibrate import noise_floor, propose_kernel_tolerances, propose_limits
    from harness.kernel_gates import EXACT, basket_envs, family, run_kernel_gates
    from harness.long_context import ProbeSpec, run_probe

    cfg = load_config(config)
    pol = load_policy(policy, basket_set=cfg.basket.set)
    if 0 < long_context <= PROBE_STEPS or long_context < 0:
        raise EvalbotError(f"--long-context {long_context}: give 0 (skip) or more than {PROBE_STEPS} positions")
    if not gpu_available():
        raise EvalbotError(NO_GPU)
    from harness.session import SessionSpec, run_session
    from reference_runtime.runtime.kernels import baseline_kernels
    from reference_runtime.runtime.worker import run_contained

    models = basket_models(cfg)
    observed = []
    gpu = "?"
    with _phases() as say:
        for i in range(runs):
            for key, path in models.items():
                say(f"run {i + 1}/{runs}: {key} teacher-forced against the fp64 reference")
                spec = SessionSpec({key: path}, {}, {}, cfg.cache_dir / "reference", gate_limits(pol),
                                   sampling_rule(pol), pol.contexts, benchmark=False)
                result = run_contained(run_session, spec, timeout_s=1800.0)
                gpu = result.gpu
                observed.extend((key, m.divergence) for m in result.models)
        probes = []
        for key, path in models.items() if long_context else ():
            say(f"{key}: the last {PROBE_STEPS} of {long_context} decoded positions against fp64")
            probes.append((key, run_contained(run_probe, ProbeSpec(path, long_context, PROBE_STEPS), timeout_s=3600.0)))
        say("baseline kernels against the fp64 slot math")
        kernels = baseline_kernels(device_arch())
        gates = run_kernel_gates(kernels, basket_envs(models, set(kernels), pol.gate_n_ctx), holdout_seed(cfg),
                                 pol.kernel_tolerances, pol.kernel_fuzz_cases, timeout_s=1800.0)
    floor = noise_floor([d for _, d in observed])
    proposed = propose_limits(floor, margin)
    slots = [(g.name.removeprefix("kernel:"), g.value) for g in gates]
    errors = [(slot, value) for slot, value in slots if family(slot) != EXACT]
    tolerances = propose_kernel_tolerances(errors, {slot: family(slot) for slot, _ in errors}, kernel_margin)

    table = Table(title=f"end-to-end noise floor over {floor.n_observations} baseline runs (margin x{margin:g})")
    for col in ("gate", "worst observed", "proposed limit", "policy now"):
        table.add_column(col, justify="right")
    current = gate_limits(pol)
    for name in ("top1_min", "kl_mean_max", "kl_p99_max", "kl_max_max", "ppl_ratio_max"):
        table.add_row(name, f"{getattr(floor, name):.4g}", f"{getattr(proposed, name):.4g}",
                      f"{getattr(current, name):.4g}")
    console.print(table)
    ktable = Table(title=f"kernel gates: worst baseline error per family (margin x{kernel_margin:g})")
    for col in ("family", "proposed", "policy now"):
        ktable.add_column(col, justify="right")
    for fam, value in tolerances.items():
        ktable.add_row(fam, f"{value:.3g}", f"{pol.kernel_tolerances.get(fam, float('nan')):.3g}")
    console.print(ktable)
    if probes:
        ptable = Table(title="long-context probe: the baseline's last steps against fp64 (a report, not a gate)")
        for col in ("model", "positions", "top-1", "KL mean", "KL max", "ppl ratio", "decode s", "fp64 s"):
            ptable.add_column(col, justify="right")
        for key, r in probes:
            d = r.divergence
            ptable.add_row(key, f"{r.positions[0]}..{r.positions[-1]}", f"{d.top1_agreement:.4f}", f"{d.kl_mean:.3g}",
                           f"{d.kl_max:.3g}", f"{d.ppl_ratio:.5f}", f"{r.decode_s:.1f}", f"{r.reference_s:.1f}")
        console.print(ptable)
    failed = [g for g in gates if not g.passed]
    if failed:
        console.print(f"[bold red]{len(failed)} baseline kernel(s) fail the current policy:[/] "
                      + ", ".join(g.name for g in failed))
    # A TOML snippet to paste: its [gates] header must not be read as console markup.
    console.print(gates_snippet(proposed), markup=False, highlight=False)
    if policy_out:
        from evalbot.policy import parse_policy, policy_bytes, with_gates

        names = _GATE_NAMES
        worst = ", ".join(f"{n} {getattr(floor, n):.6g}" for n in names)
        text = with_gates(policy_bytes(policy, cfg.basket.set)[0].decode(), {n: getattr(proposed, n) for n in names}, [
            "End-to-end, teacher-forced over the frozen corpus against the fp64 reference, per basket model.",
            f"From `evalbot calibrate --runs {runs} --margin {margin:g}` on an {gpu}, "
            f"{datetime.now(UTC):%Y-%m-%d}, over {', '.join(models)}:",
            f"the baseline runtime's worst of {floor.n_observations} runs was {worst}.",
        ])
        parse_policy(text.encode(), str(policy_out))  # what is written must load
        policy_out.write_text(text)
        console.print(f"wrote {policy_out} (its [gates] from this calibration)", markup=False)
    if json_out:
        json_out.write_text(json.dumps({
            "observations": [{"model": k, **d.as_dict()} for k, d in observed], "floor": asdict(floor),
            "margin": margin, "proposed": asdict(proposed), "kernel_gates": [asdict(g) for g in gates],
            "kernel_margin": kernel_margin, "proposed_kernel_tolerances": tolerances,
            "long_context": [{"model": k, "n_positions": r.n_positions, "positions": r.positions,
                              "reference_s": r.reference_s, "decode_s": r.decode_s, **r.divergence.as_dict()}
                             for k, r in probes],
            "policy_sha256": pol.sha256}, indent=1))
