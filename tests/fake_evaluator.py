"""A stand-in for the eval harness, for the poller's tests: real git fetch, scripted verdicts.

It fetches the job's commit from the stand-in's repository with evalbot's own bare-mirror fetch
(:class:`evalbot.fetch.Mirror`: ``fetch_ref`` first, then the SHA itself if the ref has moved on),
and reads the verdict from an ``EVAL`` file in that commit::

    label=M
    reason=3.1 % faster on both models
    gate=pr1        # optional: wait until <dir>/gates/pr1 exists (tests pause mid-evaluation)
    crash=1         # optional: raise, as an evaluator whose infrastructure failed
    error=text      # optional, with crash: the exception's message (tests put secrets in it)
    crash_until=g   # optional: raise until <dir>/gates/g exists (the validator fixes its setup)
    fault=kind      # optional, with crash: raise the kind of error the real evaluator would (FAULTS)
    over=f:L:why    # optional: label L with reason `why` instead when the frontier's tree has file f
                    # (what a PR adds over a merged one that made the same kernel faster)

Every start and finish is appended to ``<dir>/evaluations.log`` (``start <sha> <pid>`` /
``done <sha> <label>``), which is how tests count evaluations, including across processes.
``create(config)`` reads ``<dir>`` from ``EVALBOT_FAKE_EVAL_DIR``, for ``evalbot watch --evaluator``.
It needs no GPU: its start-up check reports only what ``EVALBOT_FAKE_MISSING`` names (tests of the
refusal to start).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from evalbot.errors import EvalbotError
from evalbot.faults import ContributorFault, TransientFault
from evalbot.fetch import CommitRejected, FetchError, Mirror
from evalbot.manifest import ManifestError
from evalbot.pipeline import Cancelled, Job, ModelResult, Verdict

# fault=<kind> -> what is raised: the contributor's input, a setup error that would repeat, a
# passing infrastructure failure, and a failed network fetch.
FAULTS: dict[str, type[Exception]] = {
    "manifest": ManifestError,
    "tree": CommitRejected,
    "input": ContributorFault,
    "setup": EvalbotError,
    "transient": TransientFault,
    "fetch": FetchError,
    "crash": RuntimeError,
}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


class FakeEvaluator:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "evaluations.log"
        self.gates = workdir / "gates"
        self.gates.mkdir(parents=True, exist_ok=True)

    def startup_problems(self) -> list[str]:
        missing = os.environ.get("EVALBOT_FAKE_MISSING", "")
        return [m for m in missing.split(";") if m]

    def _note(self, line: str) -> None:
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _fetch(self, job: Job) -> Path:
        mirror = Mirror(self.workdir / "cache", job.clone_url)
        mirror.fetch_commit(job.sha, refs=(job.fetch_ref,))
        return mirror.path

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        self._note(f"start {job.sha} {os.getpid()}")
        mirror = self._fetch(job)
        spec: dict[str, Any] = {}
        for line in _git(mirror, "show", f"{job.sha}:EVAL").splitlines():
            key, _, value = line.partition("=")
            spec[key.strip()] = value.strip()
        if spec.get("crash") or (spec.get("crash_until") and not (self.gates / spec["crash_until"]).exists()):
            self._note(f"crashed {job.sha}")
            message = spec.get("error") or f"simulated evaluator failure for {job.sha[:12]}"
            raise FAULTS[spec.get("fault", "crash")](message)
        if gate := spec.get("gate"):
            while not (self.gates / gate).exists():
                if cancel.wait(0.05):
                    self._note(f"cancelled {job.sha}")
                    raise Cancelled(job.sha)
        label = spec.get("label", "none")
        reason = spec.get("reason", f"scripted {label}")
        if (over := spec.get("over")) and job.baseline_sha:
            path, over_label, over_reason = over.split(":", 2)
            mirror = Mirror(self.workdir / "cache", job.clone_url)
            mirror.fetch_commit(job.baseline_sha, refs=(f"refs/heads/{job.base_ref}",))
            if path in _git(mirror.path, "ls-tree", "--name-only", job.baseline_sha).split():
                label, reason = over_label, over_reason
        speedup = float(spec.get("speedup", "1.0"))
        self._note(f"done {job.sha} {label}")
        return Verdict(
            label=label,
            reasons=(reason,),
            markdown=f"**{label}** — {reason}\n\nbaseline `{job.baseline_sha}`\n",
            gpu="Fake GPU",
            policy_hash="fake-policy-1",
            document={"commit": job.sha, "baseline": job.baseline_sha, "label": label, "at": time.time()},
            models=(
                ModelResult("qwen3moe-tiny", label != "REJECT", 100.0 * speedup, 100.0, speedup,
                            (speedup - 0.01, speedup + 0.01)),
            ),
        )


def create(config: object) -> FakeEvaluator:
    return FakeEvaluator(Path(os.environ["EVALBOT_FAKE_EVAL_DIR"]))


def evaluations(workdir: Path) -> list[tuple[str, str]]:
    """(event, sha) pairs from the log, in order."""
    log = workdir / "evaluations.log"
    if not log.exists():
        return []
    return [(parts[0], parts[1]) for parts in (line.split() for line in log.read_text().splitlines()) if parts]
