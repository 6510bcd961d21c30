"""``evalbot eval <commit>``: evaluate one commit of a kernels repo against its baseline, as a validator
would, and print the verdict. Exit 0: verdict XL…none; 1: REJECT; 2: the evaluation could not run.
``evalbot calibrate``: the noise floor between correct implementations, and the gate limits it implies."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from evalbot.config import load_config
from evalbot.errors import EvalbotError

console = Console()
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="policy TOML (default: the shipped v1)")]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EvalbotError(f"git {' '.join(args)} in {repo}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def default_branch(repo: Path) -> str:
    """origin's HEAD when the checkout has one, else main or master, whichever exists."""
    head = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    if head:
        return head
    for name in ("main", "master"):
        if subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"],
                          capture_output=True, check=False).returncode == 0:
            return name
    raise EvalbotError(f"{repo}: no origin/HEAD, main or master branch to take the baseline from; pass --baseline")


def resolve(repo: Path, rev: str) -> str:
    if rev.startswith("-"):
        raise EvalbotError(f"{rev!r} looks like an option, not a commit")
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


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
        help="commit to compare against (default: the merge-base with the default branch); "
             "'runtime' for the runtime's own baseline kernels")] = None,
    build_only: Annotated[bool, typer.Option("--build-only", help="compile and check the manifest only")] = False,
    arch: Annotated[str | None, typer.Option(help="GPU arch (default: this GPU's; sm_90 with --build-only)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the verdict document here")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="write the PR comment here")] = None,
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
) -> None:
    """Evaluate COMMIT against its baseline: build, gates, interleaved benchmark, label."""
    from evalbot import verdict as verdict_doc
    from evalbot.evaluator import NO_GPU, evaluate_trees, gpu_available
    from evalbot.fetch import Mirror
    from evalbot.policy import load_policy

    cfg = load_config(config)
    pol = load_policy(policy)
    if not build_only and not gpu_available():
        raise EvalbotError(NO_GPU)
    repo = repo.expanduser().resolve()
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise EvalbotError(f"{repo} is not a git repository (pass --repo)")
    sha = resolve(repo, commit)
    if baseline == "runtime":
        base_sha = None
    else:
        base_sha = resolve(repo, baseline) if baseline else _git(repo, "merge-base", sha, default_branch(repo))
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
        front = mirror.export(base_sha, Path(tmp) / "frontier") if base_sha else None
        commits = verdict_doc.Commits(str(repo), sha, base_sha, None)
        with _phases() as say:
            outcome = evaluate_trees(cfg, cand, front, commits, policy=pol, build_only=build_only,
                                     arch=arch or ("sm_90" if build_only else None), progress=say)  # type: ignore[arg-type]
    doc = outcome.document
    if json_out:
        json_out.write_text(verdict_doc.to_json(doc))
    if markdown_out:
        markdown_out.write_text(verdict_doc.markdown(doc))
    if build_only:
        ok = outcome.measurements.build_ok
        console.print("[bold green]build OK[/]" if ok else f"[bold red]REJECT[/] {doc['reasons'][0]}")
        raise typer.Exit(0 if ok else 1)
    verdict_doc.print_report(doc, console)
    raise typer.Exit(1 if doc["label"] == "REJECT" else 0)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)

