"""A validator's world for the poller tests: the GitHub stand-in, a real ledger, a config file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_evaluator import FakeEvaluator

from evalbot.config import Config, load_config
from evalbot.github.client import GithubClient
from evalbot.github.publisher import Publisher
from evalbot.github.standin import GithubStandin, Repo
from evalbot.ledger_recorder import open_recorder
from evalbot.queue.store import JobQueue
from evalbot.watch import PollReport, Watcher, WatchSettings, secrets_of
from ledger import Ledger
from ledger.keys import generate

TOKEN = "ghp_standinSECRETtoken0123456789abcdef"
BOT = "evalbot-validator"
BASKET_TINY = "qwen3moe-tiny+gemma4-tiny"  # the ledger's name of the tiny basket the world config sets
REPLAY = Path(__file__).resolve().parents[2] / "shared" / "github-replay"
TESTS = Path(__file__).resolve().parent


@dataclass
class World:
    standin: GithubStandin
    repo: Repo
    root: Path
    config_path: Path
    evaldir: Path

    @property
    def cfg(self) -> Config:
        return load_config(self.config_path, environ={})

    def client(self) -> GithubClient:
        return GithubClient(self.cfg.github, TOKEN)

    def watcher(self, dry_run: bool = False) -> Watcher:
        cfg = self.cfg
        g = cfg.github
        client = GithubClient(g, TOKEN)
        recorder, engine = open_recorder(cfg, read_only=dry_run)
        queue = JobQueue.in_memory() if dry_run or engine is None else JobQueue(engine)
        settings = WatchSettings(g.repo, g.base_branch, g.include_drafts, g.include_forks, g.max_attempts,
                                 g.poll_interval_s, secrets_of(cfg, TOKEN), g.retry_backoff_s, cfg.data_dir)
        publisher = None if dry_run else Publisher(client, g.status_context)
        return Watcher(settings, client, queue, FakeEvaluator(self.evaldir), recorder, publisher)

    def ledger(self) -> Ledger:
        return Ledger.open(self.cfg.ledger_url)

    def open_gate(self, name: str) -> None:
        (self.evaldir / "gates" / name).touch()

    def pr_branch(self, owner_repo: Repo, branch: str, label: str, **extra: str) -> str:
        """Push a commit whose EVAL file scripts the fake evaluator's verdict."""
        lines = [f"label={label}", *(f"{k}={v}" for k, v in extra.items())]
        return self.standin.commit(owner_repo, branch, {"EVAL": "\n".join(lines) + "\n",
                                                        "kernel.cu": f"// {branch} {label}\n"})


def settle(watcher: Watcher, max_polls: int = 20) -> list[PollReport]:
    """Poll until no queued commit waits out a retry delay (sleeping each delay out); the reports."""
    reports = [watcher.poll_once()]
    while reports[-1].next_retry_s is not None and len(reports) < max_polls:
        time.sleep(reports[-1].next_retry_s)
        reports.append(watcher.poll_once())
    return reports


class Bot:
    """One ``evalbot watch`` process, its output in files (a pipe could fill up and block it)."""

    def __init__(self, w: World, name: str, *args: str, config: Path | None = None) -> None:
        self.out = w.root / f"{name}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALBOT_", "GITHUB_"))}
        env |= {
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
            "EVALBOT_FAKE_EVAL_DIR": str(w.evaldir),
        }
        command = [sys.executable, "-c", "from evalbot.cli import main; main()", "watch",
                   "--config", str(config or w.config_path), "--evaluator", "fake_evaluator:create", *args]
        self.proc = subprocess.Popen(command, env=env, stdout=self.out.open("w"), stderr=subprocess.STDOUT,
                                     cwd=w.root)

    def output(self) -> str:
        return self.out.read_text()

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        return self.proc.wait(timeout), self.output()

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"bot exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.05)


def write_config(root: Path, api_url: str, **github: object) -> Path:
    key = root / "keys" / "validator.pem"
    generate(key)
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    settings: dict[str, object] = {
        "repo": "acme/kernels",
        "api_url": api_url,
        "token_file": str(token_file),
        "poll_interval_s": 0.2,
        "request_interval_s": 0.0,
        "write_interval_s": 0.0,
        "backoff_s": 0.05,
        "retries": 6,
        "timeout_s": 5,
        "retry_backoff_s": 0.05,  # transient evaluation failures are retried after 0.05 s, 0.1 s, ...
        **github,
    }

    def toml(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        return repr(value)

    lines = ["[github]", *(f"{k} = {toml(v)}" for k, v in settings.items())]
    lines += [
        "[ledger]",
        f'url = "{root / "data" / "ledger.sqlite"}"',
        f'signing_key = "{key}"',
        'gpu_class = "test-gpu"',
        "[basket]",
        'set = "tiny"',  # the ledger's basket name; the stand-in evaluator loads no model
        "[paths]",
        f'data_dir = "{root / "data"}"',
        f'cache_dir = "{root / "cache"}"',
    ]
    path = root / "validator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def world(root: Path, **github: object) -> Iterator[World]:
    with GithubStandin(root / "github") as standin:
        standin.user(BOT, token=TOKEN)
        repo = standin.create_repo("acme", "kernels", {"README.md": "kernels\n", "EVAL": "label=none\n"})
        evaldir = root / "eval"
        evaldir.mkdir()
        yield World(standin, repo, root, write_config(root, standin.api_url, **github), evaldir)
