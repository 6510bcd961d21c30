"""What each chained entry's hashes and signature are computed over.

An entry's *content* is its record's columns (an evaluation also carries its measurements, sorted by
model), as canonical JSON. The *entry hash* binds the content hash to the position (``seq``), the
kind, the time, the signing key and the previous entry's hash, so moving, removing or inserting a
row breaks the link after it. Writing and verifying both go through these functions, so the two
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ledger.canonical import canonical_json, sha256_hex, utc_timestamp

EVALUATION = "evaluation"
FRONTIER_ADVANCE = "frontier_advance"
KINDS = (EVALUATION, FRONTIER_ADVANCE)

EVALUATION_FIELDS = (
    "repo",
    "pr",
    "commit_sha",
    "author",
    "base_commit",
    "frontier_commit",
    "gpu",
    "gpu_class",
    "basket",
    "evalbot_version",
    "policy_hash",
    "started_at",
    "finished_at",
    "status",
    "label",
    "reasons",
    "verdict",
)
MEASUREMENT_FIELDS = (
    "model",
    "tokens_per_s",
    "frontier_tokens_per_s",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "gates_passed",
)
ADVANCE_FIELDS = (
    "basket",
    "gpu_class",
    "commit_sha",
    "author",
    "previous_commit",
    "delta",
    "model_deltas",
    "evaluation_seq",
    "advanced_at",
)

# Domain-separation prefixes: an entry signature can never be replayed as a head signature.
_ENTRY_DOMAIN = b"evalbot-ledger-entry-v1\n"
_HEAD_DOMAIN = b"evalbot-ledger-head-v1\n"


def _jsonable(value: Any) -> Any:
    return utc_timestamp(value) if isinstance(value, datetime) else value


def _pick(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {name: _jsonable(row[name]) for name in fields}


def evaluation_content(row: Mapping[str, Any], measurements: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    content = _pick(row, EVALUATION_FIELDS)
    content["measurements"] = sorted(
        (_pick(m, MEASUREMENT_FIELDS) for m in measurements), key=lambda m: m["model"]
    )
    return content


def advance_content(row: Mapping[str, Any]) -> dict[str, Any]:
    return _pick(row, ADVANCE_FIELDS)


def content_hash(content: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(content))


def entry_hash(
    *, seq: int, kind: str, recorded_at: datetime, key_id: str, content_hash: str, prev_hash: str
) -> str:
    return sha256_hex(
        canonical_json(
            {
                "seq": seq,
                "kind": kind,
                "recorded_at": utc_timestamp(recorded_at),
                "key_id": key_id,
                "content": content_hash,
                "prev": prev_hash,
            }
        )
    )


def entry_message(entry_hash_hex: str) -> bytes:
    return _ENTRY_DOMAIN + entry_hash_hex.encode("ascii")


def head_message(seq: int, entry_hash_hex: str) -> bytes:
    return _HEAD_DOMAIN + f"{seq}:{entry_hash_hex}".encode("ascii")
