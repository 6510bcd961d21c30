"""Whose fault an evaluation's exception is, and whether trying again can change the outcome.

The poller acts on the answer (docs/poller.md, "Failed evaluations"):

* **contributor**: the PR's own input cannot be evaluated (a malformed manifest, a tree too large to
  export). A ``REJECT`` verdict with the error as its reason: recorded, published once, never retried.
* **deterministic**: the validator's setup is wrong (a config value, a missing model, no GPU). The
  same error would come back on every try, so it is not retried until the process restarts.
* **transient**: the validator's infrastructure failed this once (a network fetch, the docker
  engine, a driver hiccup, a ledger lock). Retried with growing delays, up to ``max_attempts``.

Infrastructure faults of either kind are the validator's problem: they stay in the local queue and
the log, never in the public ledger or on the contributor's PR.
"""

from __future__ import annotations

import subprocess
from enum import StrEnum

from evalbot.errors import EvalbotError
from evalbot.fetch import FetchError
from evalbot.github.client import GithubUnavailable
from evalbot.manifest import ManifestError
from ledger.dberrors import LedgerBusy


class Fault(StrEnum):
    CONTRIBUTOR = "contributor"
    DETERMINISTIC = "deterministic"
    TRANSIENT = "transient"


class ContributorFault(EvalbotError):
    """The contributor's input cannot be evaluated: a REJECT whose reason is this message."""


class TransientFault(EvalbotError):
    """The infrastructure failed in a way a later try may not repeat."""


# Exceptions that blame the PR's content. A FetchError is the network's or git's unless its class
# says ``contributor_fault = True`` (:class:`evalbot.fetch.CommitRejected`: a tree bomb, a tree or
# a fetch over the caps).
_CONTRIBUTOR: tuple[type[BaseException], ...] = (ContributorFault, ManifestError)


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, _CONTRIBUTOR) or getattr(exc, "contributor_fault", False) is True:
        return Fault.CONTRIBUTOR
    if isinstance(exc, TransientFault | FetchError | GithubUnavailable | LedgerBusy | OSError
                   | subprocess.TimeoutExpired | MemoryError):
        return Fault.TRANSIENT
    if isinstance(exc, EvalbotError | LookupError | TypeError | ValueError | AttributeError | ImportError
                   | NotImplementedError | RecursionError):
        # Worded errors about the setup (config, models, GPU, policy), and programming errors: the
        # same input meets the same code on the next try.
        return Fault.DETERMINISTIC
    return Fault.TRANSIENT  # an unknown failure gets the bounded retries, not a permanent verdict
