"""GitHub API calls per poll of ``evalbot watch`` with N open PRs, counted by the GitHub stand-in.

    python benchmarks/poller_calls.py [--prs 1 10 100 250 1000] [--idle-polls 3]

For each N: a repository with N open PRs; one pass evaluates and publishes every head (an instant
evaluator: only the GitHub traffic matters here); then idle polls (nothing changed on GitHub), one
poll after a single force-push, one after force-pushing that PR back to its evaluated commit (its
stored verdict is published again, nothing is evaluated), and one after a push to that PR whose evaluation
fails (``max_attempts`` tries, then the failure is recorded and published). Every request the
stand-in serves is counted, split into 200s (which count against GitHub's rate limit) and 304s
(conditional requests answered "not modified", which do not). For comparison the same idle poll is
repeated with the ETag cache emptied first, i.e. what the poll would cost without conditional
requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from watch_support import BOT, TOKEN, write_config

from evalbot.config import load_config
from evalbot.github.client import GithubClient
from evalbot.github.publisher import Publisher
from evalbot.github.standin import GithubStandin
from evalbot.ledger_recorder import open_recorder
from evalbot.pipeline import Job, ModelResult, Verdict
from evalbot.queue.store import JobQueue
from evalbot.watch import Watcher, WatchSettings


class InstantEvaluator:
    def __init__(self) -> None:
        self.broken: set[str] = set()  # commits whose evaluation raises (an infrastructure failure)

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        if job.sha in self.broken:
            raise RuntimeError("the GPU fell off the bus")
        return Verdict("XS", ("instant",), "instant verdict\n", "bench GPU", "bench-policy",
                       models=(ModelResult("qwen3moe-tiny", True, 101.0, 100.0, 1.01),))


def counted(standin: GithubStandin, action) -> Counter[int]:
    before = len(standin.requests)
    action()
    return Counter(s.status for s in standin.requests[before:])


def measure(n: int, idle_polls: int, root: Path) -> dict[str, Counter[int]]:
    with GithubStandin(root / "github", rate_limit=1_000_000) as standin:
        standin.user(BOT, token=TOKEN)
        repo = standin.create_repo("acme", "kernels", {"README.md": "kernels\n"})
        for i in range(n):
            standin.commit(repo, f"pr{i}", {"kernel.cu": f"// {i}\n"})
            standin.open_pull(repo, repo, f"pr{i}", f"PR {i}")
        cfg = load_config(write_config(root, standin.api_url), environ={})
        g = cfg.github
        client = GithubClient(g, TOKEN)
        recorder, engine = open_recorder(cfg, read_only=False)
        assert engine is not None
        settings = WatchSettings(g.repo, g.base_branch, g.include_drafts, g.include_forks, g.max_attempts,
                                 g.poll_interval_s)
        evaluator = InstantEvaluator()
        watcher = Watcher(settings, client, JobQueue(engine), evaluator, recorder,
                          Publisher(client, g.status_context))

        result = {"first pass (evaluate + publish all)": counted(standin, watcher.poll_once),
                  "next poll": counted(standin, watcher.poll_once)}
        idle = Counter[int]()
        for _ in range(idle_polls):
            idle.update(counted(standin, watcher.poll_once))
        result["idle poll (mean)"] = Counter({k: v // idle_polls for k, v in idle.items()})

        def without_etags() -> None:
            client._cache.clear()  # what a poll costs without conditional requests
            watcher.poll_once()

        result["idle poll without ETags"] = counted(standin, without_etags)
        first_head = standin.head(repo, "pr0")
        assert first_head is not None
        standin.force_push(repo, "pr0", {"kernel.cu": "// amended\n"})
        result["poll after one force-push (incl. its publish)"] = counted(standin, watcher.poll_once)
        standin.push_existing(repo, "pr0", first_head)
        result["poll after a force-push back (republish only)"] = counted(standin, watcher.poll_once)
        evaluator.broken.add(standin.commit(repo, "pr0", {"kernel.cu": "// breaks the GPU\n"}))
        result[f"poll after a push that fails {g.max_attempts}x (+ publish)"] = counted(standin, watcher.poll_once)
        result["idle poll after those"] = counted(standin, watcher.poll_once)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prs", type=int, nargs="+", default=[1, 10, 100, 250, 1000])
    parser.add_argument("--idle-polls", type=int, default=3)
    args = parser.parse_args()
    print(f"{'open PRs':>8}  {'poll':<48} {'requests':>8} {'200 (counted)':>13} {'304 (free)':>10}")
    for n in args.prs:
        with tempfile.TemporaryDirectory() as tmp:
            for name, statuses in measure(n, args.idle_polls, Path(tmp)).items():
                total = sum(statuses.values())
                counted_calls = total - statuses[304]
                print(f"{n:>8}  {name:<48} {total:>8} {counted_calls:>13} {statuses[304]:>10}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
