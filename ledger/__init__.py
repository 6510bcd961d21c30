"""The public, append-only, signed evaluation ledger.

Typical use by the bot::

    ledger = Ledger.open(config.ledger_url, signer=Signer.load(key_path), create=True)
    row = ledger.record_evaluation(EvaluationIn(...))
    ledger.record_frontier_advance(AdvanceIn(...))
    ledger.frontier(basket, gpu_class); ledger.find(sha); ledger.verify().ok
"""

from ledger.api import Ledger
from ledger.errors import (
    AppendOnlyError,
    FrontierConflictError,
    LedgerError,
    LedgerInputError,
    LedgerOpenError,
    SchemaVersionError,
    SigningKeyError,
)
from ledger.keys import Signer
from ledger.models import Base, Evaluation, FrontierAdvance, Measurement
from ledger.records import LABELS, STATUSES, AdvanceIn, EvaluationIn, MeasurementIn
from ledger.verify import Problem, VerifyReport

__all__ = [
    "LABELS",
    "STATUSES",
    "AdvanceIn",
    "AppendOnlyError",
    "Base",
    "Evaluation",
    "EvaluationIn",
    "FrontierAdvance",
    "FrontierConflictError",
    "Ledger",
    "LedgerError",
    "LedgerInputError",
    "LedgerOpenError",
    "Measurement",
    "MeasurementIn",
    "Problem",
    "SchemaVersionError",
    "Signer",
    "SigningKeyError",
    "VerifyReport",
]
