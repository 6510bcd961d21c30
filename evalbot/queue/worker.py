"""``evalbot worker``'s side of the fleet: one procrastinate worker per GPU, one job at a time.

A worker process serves the queue of its box's GPU class (``[ledger] gpu_class``), pinned to one GPU
(``CUDA_VISIBLE_DEVICES`` is set before anything touches CUDA). For each ``evaluate`` job it:

1. claims the job's row (:meth:`~evalbot.queue.fleet.FleetStore.claim`, a compare-and-set): a job
   that is not its to run (cancelled, done, claimed by a later run) ends at once;
2. evaluates the commit against the frontier in the job key, watching its row meanwhile: a PR closed
   or force-pushed sets ``cancel_requested`` and the evaluation is abandoned;
3. stores the verdict in the row, under its claim. The poller records it in the ledger and
   publishes it: workers hold no signing key and no GitHub token.

procrastinate keeps each worker's heartbeat; every worker also looks, every ``check_interval_s``,
for jobs of its queue whose worker stopped beating ``stalled_after_s`` ago, and retries them (another
worker, or itself, picks them up; the claim of the same procrastinate job is honoured again). On
SIGTERM or SIGINT a worker stops taking jobs, abandons the running evaluation and hands its job back
(the attempt does not count), then exits: another worker takes it at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from evalbot.errors import EvalbotError
from evalbot.faults import Fault, classify
from evalbot.pipeline import Cancelled, Evaluator, Job, verdict_to_json
from evalbot.queue.fleet import TASK, FleetStore, JobState, make_app, queue_name

log = logging.getLogger("evalbot.worker")


@dataclass(frozen=True)
class WorkerSettings:
    gpu_class: str
    gpu: str  # the GPU's index on its box, as given to --gpus
    max_attempts: int
    heartbeat_s: float
    stalled_after_s: float
    check_interval_s: float
    secrets: tuple[str, ...] = ()
    name: str = ""

    @property
    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}:gpu{self.gpu}:{os.getpid()}"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class Runner:
    """Runs one job's evaluation (the body of the ``evaluate`` task)."""

    def __init__(self, settings: WorkerSettings, store: FleetStore, evaluator: Evaluator) -> None:
        self.s = settings
        self.store = store
        self.evaluator = evaluator
        self.shutdown = threading.Event()

    def run(self, procrastinate_job: int, key: str) -> str:
        """Evaluate the job of ``key``; what became of it (for the log and tests)."""
        if self.shutdown.is_set():
            return "not started: shutting down"
        row = self.store.claim(key, procrastinate_job, self.s.worker_name, self.s.gpu, self.s.max_attempts)
        if row is None:
            log.info("job %s (procrastinate %d): not this job's to run (done, cancelled or taken); skipped",
                     key[:12], procrastinate_job)
            return "skipped"
        assert row.claim is not None
        claim = row.claim
        job = Job(**row.job, baseline_sha=row.frontier)
        log.info("evaluating %s on GPU %s (%s, attempt %d, baseline %s)", job.describe(), self.s.gpu,
                 self.s.gpu_class, row.attempts, row.frontier[:12] if row.frontier else "none")
        cancel = threading.Event()
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(key, claim, cancel, done), daemon=True)
        watcher.start()
        try:
            verdict = self.evaluator.evaluate(job, cancel)
        except Cancelled:
            return self._hand_back(key, claim, job, None, counts=False, final=False)
        except Exception as exc:  # whatever the evaluator raised, the worker stays up
            return self._failed(key, claim, job, exc)
        finally:
            done.set()
            watcher.join()
        try:
            record = {**verdict_to_json(verdict), "baseline_sha": job.baseline_sha}
            json.dumps(record)
        except (TypeError, ValueError, AttributeError) as exc:
            return self._hand_back(key, claim, job, f"unusable verdict: {_one_line(exc)}", counts=True, final=True)
        return self._store(key, claim, job, record, verdict.label)

    def _store(self, key: str, claim: str, job: Job, record: dict[str, Any], label: str) -> str:
        if self.store.finish(key, claim, record):
            log.info("verdict %s for %s", label, job.describe())
            return "done"
        log.warning("verdict for %s not stored: the job was cancelled or claimed again meanwhile", job.describe())
        return "superseded"

    def _watch(self, key: str, claim: str, cancel: threading.Event, done: threading.Event) -> None:
        """Abandon the evaluation when the poller cancels the job, the claim moves on, or we stop."""
        while not done.is_set():
            if self.shutdown.is_set():
                cancel.set()
                return
            try:
                if self.store.cancel_requested(key, claim):
                    cancel.set()
                    return
            except Exception as exc:  # the database unreachable a moment: look again
                log.warning("checking job %s for cancellation: %s", key[:12], _one_line(exc))
            done.wait(min(self.s.check_interval_s, 1.0))
            if self.shutdown.is_set():
                cancel.set()
                return

    def _failed(self, key: str, claim: str, job: Job, exc: Exception) -> str:
        from evalbot.watch import clean_error, reject_for_input

        fault = classify(exc)
        if fault is Fault.CONTRIBUTOR:
            verdict = reject_for_input(job, clean_error(str(exc).strip() or _one_line(exc), self.s.secrets))
            return self._store(key, claim, job, {**verdict_to_json(verdict), "baseline_sha": job.baseline_sha},
                               verdict.label)
        error = clean_error(_one_line(exc), self.s.secrets)
        return self._hand_back(key, claim, job, error, counts=True, final=fault is Fault.DETERMINISTIC)

    def _hand_back(self, key: str, claim: str, job: Job, error: str | None, *, counts: bool, final: bool) -> str:
        state = self.store.hand_back(key, claim, error, counts=counts, final=final, max_attempts=self.s.max_attempts)
        if state is JobState.CANCELLED:
            log.info("cancelled %s: its PR moved on", job.describe())
        elif state is JobState.QUEUED and error is None:
            log.warning("handed %s back to the queue: shutting down", job.describe())
        elif state is JobState.QUEUED:
            log.error("evaluation of %s failed (%s); queued again", job.describe(), error)
        elif state is JobState.FAILED:
            log.error("evaluation of %s failed (%s); not retried. Nothing is published", job.describe(), error)
        return str(state) if state else "superseded"


async def _retry_stalled(app: Any, settings: WorkerSettings, stop: asyncio.Event) -> None:
    """procrastinate's stalled-job recovery: jobs of this queue whose worker went silent."""
    queue = queue_name(settings.gpu_class)
    while not stop.is_set():
        try:
            stalled = await app.job_manager.get_stalled_jobs(queue=queue, task_name=TASK,
                                                             seconds_since_heartbeat=settings.stalled_after_s)
            for job in stalled:
                try:
                    await app.job_manager.retry_job(job)
                    log.warning("job %s (procrastinate %d): its worker went silent; retrying it",
                                str(job.task_kwargs.get("key", "?"))[:12], job.id)
                except Exception as exc:  # another worker retried it first
                    log.debug("retrying stalled job %s: %s", job.id, exc)
            await app.job_manager.prune_stalled_workers(settings.stalled_after_s)
        except Exception as exc:  # the database unreachable a moment: look again later
            log.warning("looking for stalled jobs: %s", _one_line(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.check_interval_s)
        except TimeoutError:
            pass


def serve(settings: WorkerSettings, store: FleetStore, evaluator: Evaluator, *, once: bool = False) -> None:
    """Run one worker until SIGTERM/SIGINT (``once``: until its queue is empty)."""
    runner = Runner(settings, store, evaluator)
    app = make_app(store.url)

    @app.task(name=TASK, pass_context=True)
    def evaluate(context: Any, key: str) -> str:
        return runner.run(int(context.job.id), key)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with app.open_async():
            worker = asyncio.create_task(app.run_worker_async(
                queues=[queue_name(settings.gpu_class)], name=settings.worker_name, concurrency=1,
                wait=not once, install_signal_handlers=False, update_heartbeat_interval=settings.heartbeat_s,
                stalled_worker_timeout=settings.stalled_after_s, fetch_job_polling_interval=settings.check_interval_s,
            ))

            def on_signal(signum: int) -> None:
                log.warning("%s: abandoning the running evaluation (if any) and stopping",
                            signal.Signals(signum).name)
                runner.shutdown.set()
                stop.set()
                worker.cancel()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            stalled = asyncio.create_task(_retry_stalled(app, settings, stop))
            log.info("worker %s serving queue %s (GPU %s)", settings.worker_name, queue_name(settings.gpu_class),
                     settings.gpu)
            try:
                await worker
            except asyncio.CancelledError:
                pass
            finally:
                stop.set()
                await stalled

    try:
        asyncio.run(main())
    except EvalbotError:
        raise
    except OSError as exc:
        raise EvalbotError(f"[fleet] url: cannot reach the fleet's database: {exc}") from None
