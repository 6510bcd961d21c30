"""The poller's hands on procrastinate: defer a job under its queueing lock, cancel a waiting one.

Deferring is safe to repeat: the queueing lock (the job key) lets at most one job of a key wait,
and a second ``defer`` of a waiting key is :class:`procrastinate.exceptions.AlreadyEnqueued`, which
is what we want. A job deferred while another of its key runs is harmless too: its worker's claim
fails (:meth:`evalbot.queue.fleet.FleetStore.claim`) and it ends without evaluating.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text

from evalbot.queue.fleet import TASK, FleetStore, JobRow, make_app, queue_name

log = logging.getLogger("evalbot.fleet")


class Dispatcher:
    def __init__(self, store: FleetStore) -> None:
        self.store = store
        self.app: Any = make_app(store.url)
        self._open = False

    def open(self) -> Dispatcher:
        if not self._open:
            self.app.open()
            self._open = True
        return self

    def close(self) -> None:
        if self._open:
            self.app.close()
            self._open = False

    def __enter__(self) -> Dispatcher:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def defer(self, job: JobRow, delay_s: float = 0.0) -> int | None:
        """Queue ``job`` on its GPU class's queue (to start no sooner than ``delay_s`` from now: a
        retry after a transient failure); the procrastinate job id, or None when one of this key is
        waiting already."""
        from procrastinate.exceptions import AlreadyEnqueued

        self.open()
        options: dict[str, Any] = {"schedule_in": {"seconds": delay_s}} if delay_s > 0 else {}
        deferrer = self.app.configure_task(name=TASK, queue=queue_name(job.gpu_class), queueing_lock=job.key,
                                           priority=job.priority, **options)
        try:
            return int(deferrer.defer(key=job.key))
        except AlreadyEnqueued:
            return None

    def cancel_waiting(self, key: str) -> int:
        """Cancel the procrastinate job of ``key`` that waits (``todo``); how many were cancelled.
        A running one is stopped through its row instead (its worker watches ``cancel_requested``)."""
        self.open()
        with self.store.engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM procrastinate_jobs WHERE queueing_lock = :key AND status = 'todo'"),
                               {"key": key}).scalars().all()
        return sum(1 for job_id in ids if self.app.job_manager.cancel_job_by_id(job_id))
