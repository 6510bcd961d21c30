"""Ledger errors: each one is worded for the user and names the file or value that was wrong.

The ledger depends on nothing of evalbot: its errors derive from :class:`LedgerError`, which a
command line (evalbot's ``main``) reports as one line, like its own errors.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger problem the CLI reports as one line."""


class LedgerOpenError(LedgerError):
    """The URL does not lead to a readable evalbot ledger (missing, corrupted, or another database)."""


class SchemaVersionError(LedgerError):
    """The ledger's schema revision is not the one this evalbot reads (older: migrate; unknown: newer)."""


class AppendOnlyError(LedgerError):
    """Someone tried to change or remove a chained row."""


class SigningKeyError(LedgerError):
    """A signing or public key file is missing, unreadable, or not an Ed25519 key."""


class LedgerInputError(LedgerError):
    """A value handed to the ledger API is malformed (naive timestamp, unknown label, NaN, ...)."""


class FrontierConflictError(LedgerError):
    """A frontier advance was computed against a frontier that is no longer the current one."""
