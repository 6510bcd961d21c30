"""Canonical JSON and timestamps: the byte-exact forms that hashes and signatures are computed over.

Every database returns the same Python values for a row (strings, ints, floats, UTC datetimes), so
the hash of a row read back from SQLite or PostgreSQL equals the hash computed when it was written.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN/Infinity (not JSON, and not equal to themselves)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with microseconds, the precision both SQLite and PostgreSQL keep."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def is_finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
