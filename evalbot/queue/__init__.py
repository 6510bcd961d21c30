"""Evaluation jobs: where the poller's work waits, and who runs it.

* :mod:`evalbot.queue.store`: the embedded queue, a table in the ledger's database, run by the one
  in-process worker of ``evalbot watch`` (the default: SQLite, nothing else to install);
* :mod:`evalbot.queue.fleet`: the fleet, procrastinate jobs on the validator's PostgreSQL, run by
  ``evalbot worker`` processes (one per GPU, on any number of boxes);
* :mod:`evalbot.queue.dispatch`: the poller's side of the fleet (enqueue, cancel, collect);
* :mod:`evalbot.queue.worker`: the worker's side.

Jobs are not ledger data: only verdicts reach the ledger.
"""
