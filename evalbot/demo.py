"""``evalbot demo``: watch ``evalbot watch`` work end to end on one machine, without GitHub.

It starts the local GitHub stand-in (:mod:`evalbot.github.standin`) on 127.0.0.1, pushes the example
kernels repository (``evalbot example-repo``) to it, opens a pull request for each of its branches,
writes a validator config pointing there (its own token, signing key and SQLite ledger), runs
``evalbot watch --once`` on that config as a separate process, exactly as a validator runs it, and
prints the comments, labels and statuses the poller left on the stand-in, and the ledger's rows.

It is a command of its own rather than a ``watch --demo`` flag: the daemon's code path stays free
of demo state, and the demo needs none of a validator's set-up (token, key, ledger, config).

On a box with a CUDA GPU and the basket models the poller uses evalbot's own evaluator (build,
gates, benchmark). Without one it uses :class:`BuildOnlyEvaluator`: each commit is fetched, exported
and built by the configured backend exactly as a validator builds it, a build failure is the REJECT
it would be, and a tree that builds is labelled ``none`` with a reason saying that nothing was gated
or measured. The example repository is evalbot's own, so the demo builds with the local backend
unless ``--backend docker`` is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from evalbot import build_comment
from evalbot.config import Config
from evalbot.errors import EvalbotError
from evalbot.pipeline import Job, Verdict

REPO_OWNER, REPO_NAME = "demo", "kernels"
BOT, CONTRIBUTOR = "evalbot-demo", "contributor"
TOKEN = "ghp_demo_token_for_the_local_stand_in_only"
ARCH = "sm_90"  # what a build-only evaluation compiles for (the architecture of an H100/H200)
NOT_GATED = "build OK; nothing was gated or measured: no GPU here (evalbot demo's build-only evaluator)"

console = Console(highlight=False, soft_wrap=True)


class BuildOnlyEvaluator:
    """The poller's evaluator for a box without a GPU: fetch, export and build, as a validator does."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def startup_problems(self) -> list[str]:
        """What ``evalbot watch`` checks before starting: only the build toolchain, no GPU or basket."""
        from evalbot.build.backend import make_backend

        try:
            make_backend(self.config.build).toolchain()
        except EvalbotError as exc:
            return [f"build toolchain ([build] backend = {self.config.build.backend}): {exc}"]
        return []

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        from evalbot.evaluator import build_only
        from evalbot.fetch import Mirror
        from evalbot.policy import load_policy

        mirror = Mirror(self.config.cache_dir, job.clone_url, timeout_s=self.config.build.fetch_timeout_s)
        mirror.fetch_commit(job.sha, refs=(job.fetch_ref,))
        scratch = self.config.cache_dir / "trees"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            report = build_only(self.config, mirror.export(job.sha, Path(tmp) / "candidate"), ARCH, commit=job.sha)
        document = {"build_only": True, "build": report.to_dict()}
        return Verdict(
            label="none" if report.ok else "REJECT",
            reasons=(NOT_GATED,) if report.ok else report.reasons,
            markdown=build_comment.markdown(report.to_dict(), note=NOT_GATED),
            gpu="none (build only)",
            policy_hash=load_policy().sha256,
            document=document,
        )


def create_build_only(config: Config) -> BuildOnlyEvaluator:
    """``evalbot watch --evaluator evalbot.demo:create_build_only``."""
    return BuildOnlyEvaluator(config)


def _write_config(root: Path, api_url: str, backend: str) -> Path:
    from ledger.keys import generate

    key = root / "validator.key"
    generate(key)
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = root / "validator.toml"
    config.write_text(
        "# Written by `evalbot demo`: a validator of the local GitHub stand-in.\n"
        f'[github]\nrepo = "{REPO_OWNER}/{REPO_NAME}"\napi_url = "{api_url}"\ntoken_file = "{token_file}"\n'
        "poll_interval_s = 1.0\nrequest_interval_s = 0.0\nwrite_interval_s = 0.0\nbackoff_s = 0.1\n"
        f'[ledger]\nurl = "{root / "ledger.sqlite"}"\nsigning_key = "{key}"\ngpu_class = "demo"\n'
        # The example repository is evalbot's own code: building it unsandboxed is safe here.
        f'[build]\nbackend = "{backend}"\nallow_unsandboxed = {"true" if backend == "local" else "false"}\n'
        f'[paths]\ndata_dir = "{root / "data"}"\ncache_dir = "{root / "cache"}"\n'
    )
    return config


def _pretty(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def demo(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="work directory to keep (stand-in repositories, config, ledger); default: a temporary one")
    ] = None,
    backend: Annotated[str, typer.Option(help="build backend: local (default) or docker")] = "local",
    evaluator: Annotated[str | None, typer.Option(
        help="the evaluator as module:factory (default: evalbot's own with a GPU, else build-only)")] = None,
) -> None:
    """Run the poller end to end against a local GitHub stand-in: example repo, PRs, watch, results."""
    from evalbot.evaluator import gpu_available
    from evalbot.example_repo import history, write_example_repo
    from evalbot.github.standin import GithubStandin
    from evalbot.github.standin import git as sgit
    from ledger import Ledger

    if backend not in ("local", "docker"):
        raise typer.BadParameter("must be local or docker", param_hint="--backend")
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise EvalbotError(f"{directory}: not empty; the demo writes a new world into a missing or empty directory")
    chosen = evaluator or ("evalbot.evaluator:create" if gpu_available() else "evalbot.demo:create_build_only")
    root = Path(tempfile.mkdtemp(prefix="evalbot-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    try:
        with GithubStandin(root / "github") as standin:
            console.print(f"[bold]1.[/] local GitHub stand-in at {standin.api_url} (data in {escape(str(root))})")
            standin.user(BOT, token=TOKEN)
            repo = standin.create_repo(REPO_OWNER, REPO_NAME)
            shas = write_example_repo(root / "example")
            sgit.git(Path(repo.path), "fetch", "--quiet", str(root / "example"), "+refs/heads/*:refs/heads/*")
            console.print(f"[bold]2.[/] pushed the example kernels repository to {repo.full_name}: "
                          + ", ".join(f"{b} {s[:12]}" for b, s in shas.items()))
            pulls = []
            for commit in history():
                if commit.branch != "main":
                    pulls.append(standin.open_pull(repo, repo, commit.branch, commit.subject, author=CONTRIBUTOR))
                    console.print(f"   opened PR #{pulls[-1].number} ({commit.branch}): {escape(commit.subject)}")
            config = _write_config(root, standin.api_url, backend)
            mode = "build only: no GPU here" if chosen.endswith("create_build_only") else chosen
            console.print(f"[bold]3.[/] evalbot watch --once --config {escape(str(config))} ({escape(mode)})\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALBOT_", "GITHUB_"))}
            done = subprocess.run([sys.executable, "-m", "evalbot", "watch", "--once", "--config", str(config),
                                   "--evaluator", chosen], env=env, check=False)
            console.print(f"\n[bold]4.[/] what the poller left on the stand-in (watch exited {done.returncode}):")
            for pull in pulls:
                statuses = standin.statuses.get(pull.head_sha, [])
                status = f"{statuses[-1].state}: {statuses[-1].description}" if statuses else "none"
                console.print(f"\n[bold]PR #{pull.number}[/] {escape(pull.title)}\n  labels: "
                              f"{escape(', '.join(pull.labels) or 'none')}\n  status: {escape(status)}")
                for comment in standin.bot_comments(pull, BOT):
                    console.print(f"  comment by {BOT}:", markup=False)
                    console.print(_pretty(comment.body), markup=False)
            with Ledger.open(f"sqlite:///{root / 'ledger.sqlite'}") as ledger:
                rows = ledger.history(limit=None)
                console.print(f"\n[bold]5.[/] ledger {escape(str(root / 'ledger.sqlite'))}: {len(rows)} signed "
                              "verdicts, " + ("verifies" if ledger.verify().ok else "does NOT verify"))
                for ev in reversed(rows):
                    where = f"PR #{ev.pr}" if ev.pr else "main"
                    console.print(f"   {where:<7} {ev.commit_sha[:12]}  {ev.label or ev.status}", markup=False)
    finally:
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0:
        raise typer.Exit(done.returncode)
