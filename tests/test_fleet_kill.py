"""Exactly once, as seen from outside, whatever is SIGKILLed when.

100 PRs on the GitHub stand-in, each head evaluated on 2 GPU classes (200 jobs, plus the base branch
head on each), 4 `evalbot worker` processes (2 per class) with a quick fake evaluator, one
`evalbot watch` in fleet mode on a real PostgreSQL. While the jobs run, workers and the poller are
SIGKILLed while the work is under way (at set points of progress, a random worker and a random
delay each time) and started again. At the end: one ledger verdict per job key, one
sticky comment, one label per PR, one commit status per commit and GPU class, and no evaluation
repeated beyond the ones a kill interrupted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from fleet_support import add_fleet, create_quick, fleet_url, log_lines, poller, quick_label, wait_until, worker
from watch_support import BOT, world

from evalbot.github.sticky import MARKER
from evalbot.queue.fleet import FleetStore, JobState
from ledger import Ledger

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N_PULLS = 100
CLASSES = ["h100", "h200"]
QUICK = "fleet_support:create_quick"
assert create_quick  # the evaluator the workers load by name


@pytest.fixture
def url(tmp_path: Path):
    yield from fleet_url(tmp_path)


def test_every_job_done_once_and_published_once_under_random_sigkills(tmp_path: Path, url: str):
    rng = random.Random(15)
    with world(tmp_path, poll_interval_s=0.3) as w:
        add_fleet(w.config_path, url, CLASSES, heartbeat_s=0.2, stalled_after_s=1.0, check_interval_s=0.2)
        store = FleetStore(url)
        store.setup()  # (each process would; done once here so the first ones do not wait on each other)

        def start_worker(i: int):
            return worker(tmp_path, w.config_path, w.evaldir, CLASSES[i % 2], f"worker{i}", QUICK,
                          EVALBOT_FAKE_EVAL_S="0.05")

        # The processes start while the PRs are opened (the poller finds them as they come).
        workers = [start_worker(i) for i in range(4)]
        the_poller = poller(tmp_path, w.config_path, w.evaldir, "poller")
        pulls = []
        for i in range(N_PULLS):
            w.standin.commit(w.repo, f"pr{i}", {"kernel.cu": f"// change {i}\n"})
            pulls.append(w.standin.open_pull(w.repo, w.repo, f"pr{i}", f"change {i}"))
        heads = {p.number: p.head_sha for p in pulls}
        base = w.standin.head(w.repo, "main")
        assert base is not None
        kills = {"worker": 0, "poller": 0}

        def all_published() -> bool:
            labels_set = all(list(p.labels) == [f"eval:{quick_label(heads[p.number])}"] for p in pulls)
            statuses = all(len({s.context for s in w.standin.statuses.get(sha, [])}) == 2
                           for sha in [*heads.values(), base])
            return labels_set and statuses

        def evaluated() -> int:
            return sum(1 for parts in log_lines(w.evaldir) if parts[0] == "done")

        def labelled() -> int:
            return sum(1 for p in pulls if p.labels)

        # Kills land while the work is under way: workers as verdicts come in, the poller while it
        # queues, records and publishes.
        schedule = [("worker", evaluated, 15), ("poller", evaluated, 40), ("worker", evaluated, 70),
                    ("worker", evaluated, 110), ("worker", evaluated, 150), ("poller", labelled, 30)]
        try:
            for victim, progress, at in schedule:
                wait_until(f"{progress.__name__} >= {at}", lambda p=progress, n=at: p() >= n, timeout=120,
                           procs=(the_poller, *workers))
                time.sleep(rng.uniform(0.0, 0.3))
                if victim == "poller":
                    the_poller.kill()
                    the_poller = poller(tmp_path, w.config_path, w.evaldir, "poller")
                else:
                    i = rng.randrange(4)
                    workers[i].kill()
                    workers[i] = start_worker(i)
                kills[victim] += 1
            wait_until("every verdict published", all_published, timeout=120, procs=(the_poller, *workers))
        finally:
            the_poller.kill()
            for p in workers:
                p.kill()

        # One verdict per job key in the ledger (and a valid chain after all the kills).
        with Ledger.open(w.cfg.ledger_url) as ledger:
            assert ledger.verify().ok
            for sha in [*heads.values(), base]:
                rows = ledger.find(sha)
                assert sorted(r.gpu_class for r in rows) == CLASSES, sha
                assert {r.label for r in rows} == {quick_label(sha)}
        jobs = store.listing(include_finished=True)
        store.dispose()
        assert len(jobs) == 2 * (N_PULLS + 1) and {j.job.state for j in jobs} == {JobState.DONE}
        # One comment per PR, showing its verdict; one label; one status per commit and GPU class.
        for p in pulls:
            (comment,) = w.standin.bot_comments(p, BOT)
            label = quick_label(heads[p.number])
            assert comment.body.startswith(f"{MARKER}\n### evalbot: `{label}` for `{heads[p.number][:12]}`")
            assert "#### GPU class h100" in comment.body and "#### GPU class h200" in comment.body
        for sha in [*heads.values(), base]:
            statuses = w.standin.statuses[sha]
            assert sorted(s.context for s in statuses) == ["evalbot/h100", "evalbot/h200"], sha
        # Evaluations: every key at least once; a repeat only where a kill interrupted one.
        done = [parts[1] for parts in log_lines(w.evaldir) if parts[0] == "done"]
        assert all(done.count(sha) >= 2 for sha in [*heads.values(), base])
        assert len(done) - 2 * (N_PULLS + 1) <= kills["worker"]
        assert kills == {"worker": 4, "poller": 2}
