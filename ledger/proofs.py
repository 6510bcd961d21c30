"""What the transparency log proves to someone outside the ledger file.

- An *inclusion proof* file (:func:`prove`, :func:`verify_proof`): one entry's record, its chain
  fields and signature, its RFC 9162 inclusion proof and the signed checkpoint it is proved
  against. It is checked offline, with no database: the record hashes to the entry, the entry to
  the leaf, the leaf and proof to the checkpoint's root, and the checkpoint's signature to the key.
- A *consistency check* against an older checkpoint (:func:`check_checkpoint`): the ledger must
  still hold the checkpoint's entries, under the checkpoint's root, signed by the checkpoint's key.
  That catches what a chain check alone cannot: a truncated tail under an older genuine head, a
  rollback to an older copy, a ledger re-signed with another key, a forged or forked history.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ledger import chain, merkle
from ledger import checkpoint as notes
from ledger.canonical import utc_timestamp
from ledger.errors import LedgerError, LedgerInputError
from ledger.keys import Signer, key_id_of, public_key_from_hex, signature_valid
from ledger.models import Entry, Evaluation, FrontierAdvance, Measurement
from ledger.verify import VerifyReport

PROOF_FORMAT = "evalbot-tlog-inclusion/v1"


class ProofFileError(LedgerError):
    """An inclusion proof file that cannot be read (not JSON, a field missing or of the wrong type)."""


def default_origin(key_id: str) -> str:
    """The log's name in its checkpoints when none is configured: stable for as long as its key."""
    return f"evalbot.ledger/{key_id}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _record(ledger: Any, seq: int) -> tuple[str, dict[str, Any]]:
    """(kind, content) of entry ``seq``: exactly what its content hash is computed over."""
    with ledger.engine.connect() as conn:
        kind = conn.execute(select(Entry.kind).where(Entry.seq == seq)).scalar_one_or_none()
        if kind is None:
            raise LedgerInputError(f"{ledger.where}: no entry {seq}")
        if kind == chain.EVALUATION:
            row = conn.execute(select(Evaluation.__table__).where(Evaluation.seq == seq)).one()._mapping
            ms = [
                r._mapping for r in conn.execute(select(Measurement.__table__).where(Measurement.evaluation_seq == seq))
            ]
            return kind, chain.evaluation_content(row, ms)
        row = conn.execute(select(FrontierAdvance.__table__).where(FrontierAdvance.seq == seq)).one()._mapping
        return kind, chain.advance_content(row)


def prove(ledger: Any, seq: int, signer: Signer, origin: str, size: int | None = None) -> dict[str, Any]:
    """The inclusion proof document of entry ``seq`` against the signed checkpoint of ``size`` entries
    (default: the whole ledger)."""
    signed = ledger.checkpoint(signer, origin, size)
    size = signed.checkpoint.size
    entry_hash, proof = ledger.inclusion_proof(seq, size)
    kind, content = _record(ledger, seq)
    with ledger.engine.connect() as conn:
        entry = conn.execute(select(Entry.__table__).where(Entry.seq == seq)).one()._mapping
    return {
        "format": PROOF_FORMAT,
        "entry": {
            "seq": seq,
            "kind": kind,
            "recorded_at": utc_timestamp(entry["recorded_at"]),
            "key_id": entry["key_id"],
            "prev_hash": entry["prev_hash"],
            "entry_hash": entry_hash,
            "signature": entry["signature"],
            "content": content,
        },
        "public_key": signer.public_hex,
        "leaf_index": seq - 1,
        "tree_size": size,
        "inclusion_proof": [_b64(p) for p in proof],
        "checkpoint": signed.text(),
    }


@dataclass(frozen=True)
class ProofResult:
    seq: int
    kind: str
    content: dict[str, Any]
    checkpoint: notes.Checkpoint
    key_id: str
    trusted_key: bool  # False: checked against the key the file itself names


def _field(doc: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(doc, dict) or name not in doc:
        raise ProofFileError(f"proof file: missing field {name!r}")
    value = doc[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProofFileError(f"proof file: field {name!r} has the wrong type")
    return value


def verify_proof(doc: Any, public_hex: str | None = None) -> ProofResult:
    """Check an inclusion proof document offline; raises :class:`ledger.merkle.ProofError`,
    :class:`ledger.checkpoint.CheckpointError` or :class:`ProofFileError` naming what fails."""
    if _field(doc, "format", str) != PROOF_FORMAT:
        raise ProofFileError(f"proof file: format is not {PROOF_FORMAT}")
    entry = _field(doc, "entry", dict)
    seq, kind = _field(entry, "seq", int), _field(entry, "kind", str)
    content = _field(entry, "content", dict)
    key_hex = public_hex or _field(doc, "public_key", str)
    try:
        key = public_key_from_hex(key_hex)
    except ValueError:
        raise ProofFileError("proof file: public_key is not a raw Ed25519 key (64 hex digits)") from None
    if kind not in chain.KINDS:
        raise ProofFileError(f"proof file: unknown entry kind {kind!r}")
    try:
        recorded_at = datetime.fromisoformat(_field(entry, "recorded_at", str))
    except ValueError:
        raise ProofFileError("proof file: recorded_at is not an ISO timestamp") from None
    link = chain.entry_hash(
        seq=seq,
        kind=kind,
        recorded_at=recorded_at,
        key_id=_field(entry, "key_id", str),
        content_hash=chain.content_hash(content),
        prev_hash=_field(entry, "prev_hash", str),
    )
    if link != _field(entry, "entry_hash", str):
        raise merkle.ProofError(f"entry {seq}: its record does not hash to the entry hash the proof names (edited?)")
    if entry["key_id"] != key_id_of(key_hex):
        raise notes.CheckpointError(f"entry {seq} is signed by key {entry['key_id']}, not by key {key_id_of(key_hex)}")
    if not signature_valid(key, _field(entry, "signature", str), chain.entry_message(link)):
        raise notes.CheckpointError(f"entry {seq}: bad signature by key {entry['key_id']}")
    signed = notes.parse(_field(doc, "checkpoint", str))
    checkpoint = notes.verify(signed, bytes.fromhex(key_hex))
    size, index = _field(doc, "tree_size", int), _field(doc, "leaf_index", int)
    if size != checkpoint.size:
        raise merkle.ProofError(f"the proof is for a tree of {size} entries, the checkpoint's has {checkpoint.size}")
    if index != seq - 1:
        raise merkle.ProofError(f"entry {seq} is leaf {seq - 1}, not leaf {index}")
    try:
        path = [base64.b64decode(p, validate=True) for p in _field(doc, "inclusion_proof", list)]
    except (binascii.Error, TypeError, ValueError):
        raise ProofFileError("proof file: inclusion_proof holds something that is not base64") from None
    merkle.verify_inclusion(index, size, merkle.leaf_hash(bytes.fromhex(link)), path, checkpoint.root)
    return ProofResult(seq, kind, content, checkpoint, key_id_of(key_hex), public_hex is not None)


def _signer_key(signed: notes.SignedCheckpoint, keys: dict[str, str]) -> tuple[str, str] | None:
    """(key id, public hex) of the trusted key whose checkpoint signature is on ``signed``."""
    origin = signed.checkpoint.origin
    for kid, public_hex in keys.items():
        if any(
            s.name == origin and s.key_id == notes.key_id(origin, bytes.fromhex(public_hex)) for s in signed.signatures
        ):
            return kid, public_hex
    return None


def check_checkpoint(
    ledger: Any, signed: notes.SignedCheckpoint, report: VerifyReport, pubkeys: list[str] | None
) -> str | None:
    """Why the ledger (already chain-verified: ``report``) is not a continuation of ``signed``, or None.

    The checkpoint must be signed by a trusted key (``pubkeys``, else the ledger's own key table);
    the ledger must hold at least its entries, and its first ``size`` entries must have its root.
    """
    if pubkeys is not None:
        keys = {key_id_of(h): h for h in pubkeys}
    else:
        keys = {k.key_id: k.public_key for k in ledger.signing_keys()}
    cp = signed.checkpoint
    found = _signer_key(signed, keys)
    if found is None:
        names = ", ".join(f"{s.name} {s.key_id.hex()}" for s in signed.signatures)
        trust = "the given public key(s)" if pubkeys is not None else "this ledger's keys"
        return (
            f"the checkpoint (size {cp.size}) is signed by {names}, none of {trust}: the ledger was "
            "re-signed with another key, or the checkpoint is another log's"
        )
    kid, public_hex = found
    try:
        notes.verify(signed, bytes.fromhex(public_hex))
    except notes.CheckpointError as exc:
        return f"the checkpoint does not verify: {exc}"
    if report.entries < cp.size:
        return (
            f"the ledger has {report.entries} entries but its checkpoint signed by key {kid} covers {cp.size}: "
            "entries were removed from the end (a truncated tail under an older head), or this is an "
            "older copy of the ledger (a rollback)"
        )
    _, root = ledger.tree_root(cp.size)
    if root != cp.root:
        return (
            f"the ledger's first {cp.size} entries have Merkle root {root.hex()}, its checkpoint signed by key "
            f"{kid} says {cp.root.hex()}: the history was rewritten (a forged or forked chain)"
        )
    if cp.size:
        new_size, new_root = ledger.tree_root(report.entries)
        try:
            merkle.verify_consistency(cp.size, new_size, cp.root, new_root, ledger.consistency_proof(cp.size, new_size))
        except merkle.ProofError as exc:
            return f"the ledger is not consistent with the checkpoint: {exc}"
    return None
