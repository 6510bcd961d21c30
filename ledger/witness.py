"""Validators witnessing each other's logs, so that no log can show different histories to different readers.

A witness holds, per origin, the newest checkpoint it has checked (``tlog_witnessed``). Given a new
checkpoint of that origin, it checks the log's signature, then that the new tree extends the old
one: equal sizes must have equal roots (else the log forked), a smaller size is a rollback, and a
larger one needs an RFC 9162 consistency proof between the two roots. The witness computes that
proof from a copy of the other validator's ledger (the public site publishes one): the copy is not
trusted, the proof is, because it is verified against both signed roots. Then the witness cosigns
(c2sp.org/tlog-cosignature) and records the new checkpoint as the one to extend next time.

The log that was witnessed keeps the cosignatures it receives (``tlog_cosignatures``), after
checking that each is on one of its own checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select

from ledger import checkpoint as notes
from ledger import merkle
from ledger.api import Ledger
from ledger.engine import write_transaction
from ledger.errors import LedgerError
from ledger.keys import Signer, key_id_of
from ledger.models import Cosignature, WitnessedCheckpoint


class WitnessError(LedgerError):
    """A checkpoint the witness refuses to cosign: not signed by the log, or inconsistent with its past."""


@dataclass(frozen=True)
class Witnessed:
    cosigned: notes.SignedCheckpoint
    previous_size: int | None  # the size last seen from this origin (None: first sight)


def _last_seen(ledger: Ledger, origin: str) -> WitnessedCheckpoint | None:
    rows = ledger._all(
        select(WitnessedCheckpoint)
        .where(WitnessedCheckpoint.origin == origin)
        .order_by(WitnessedCheckpoint.size.desc())
        .limit(1)
    )
    return rows[0] if rows else None


def witness(
    ledger: Ledger,
    signed: notes.SignedCheckpoint,
    log_key: str,
    signer: Signer,
    name: str,
    other: Ledger | None = None,
    now: int | None = None,
) -> Witnessed:
    """Check ``signed`` (the log's key: ``log_key``, raw hex) against the last checkpoint seen from its
    origin, cosign it as witness ``name``, and remember it. ``other``: a copy of the log's ledger,
    needed for a consistency proof when the tree grew."""
    cp = signed.checkpoint
    try:
        notes.verify(signed, bytes.fromhex(log_key))
    except notes.CheckpointError as exc:
        raise WitnessError(str(exc)) from None
    last = _last_seen(ledger, cp.origin)
    if last is not None:
        old_root = bytes.fromhex(last.root)
        if last.key_id != key_id_of(log_key):
            raise WitnessError(
                f"{cp.origin}: signed by key {key_id_of(log_key)}, but its checkpoints so far were by {last.key_id}"
            )
        if cp.size < last.size:
            raise WitnessError(
                f"{cp.origin}: checkpoint of size {cp.size} is older than size {last.size}, already witnessed "
                "(a rollback)"
            )
        if cp.size == last.size and cp.root != old_root:
            raise WitnessError(
                f"{cp.origin}: two different roots for size {cp.size} (witnessed {last.root}, now {cp.root.hex()}): "
                "the log forked"
            )
        if cp.size > last.size and last.size > 0:
            if other is None:
                raise WitnessError(
                    f"{cp.origin}: grew from {last.size} to {cp.size} entries; give a copy of its ledger "
                    "(--ledger) to prove the new tree extends the old"
                )
            try:
                size, root = other.tree_root(cp.size)
                proof = other.consistency_proof(last.size, cp.size)
            except LedgerError as exc:
                raise WitnessError(f"{cp.origin}: its ledger copy cannot prove consistency: {exc}") from None
            if root != cp.root:
                raise WitnessError(
                    f"{cp.origin}: the ledger copy's first {size} entries have root {root.hex()}, not the "
                    f"checkpoint's {cp.root.hex()} (the copy is not this log's)"
                )
            try:
                merkle.verify_consistency(last.size, cp.size, old_root, cp.root, proof)
            except merkle.ProofError as exc:
                raise WitnessError(
                    f"{cp.origin}: size {cp.size} does not extend the witnessed size {last.size}: {exc} "
                    "(the log forked)"
                ) from None
    cosigned = notes.cosign(signed, signer, name, int(time.time()) if now is None else now)
    if last is None or cp.size > last.size:
        with write_transaction(ledger.engine) as conn:
            conn.execute(
                insert(WitnessedCheckpoint).values(
                    origin=cp.origin,
                    size=cp.size,
                    key_id=key_id_of(log_key),
                    root=cp.root.hex(),
                    checkpoint=signed.text(),
                    seen_at=datetime.now(UTC),
                )
            )
    return Witnessed(cosigned, None if last is None else last.size)


def receive(ledger: Ledger, signed: notes.SignedCheckpoint, public_hex: str) -> list[str]:
    """Keep the cosignatures on ``signed``, one of this ledger's checkpoints (its key: ``public_hex``).

    Returns the witness names stored. A cosignature is stored as received; anyone holding the
    witness's public key checks it (``checkpoint.verify_cosignature``).
    """
    notes.verify(signed, bytes.fromhex(public_hex))
    cp = signed.checkpoint
    size, root = ledger.tree_root(cp.size)
    if root != cp.root:
        raise WitnessError(f"the checkpoint's root for size {size} is not this ledger's ({root.hex()})")
    log_id = notes.key_id(cp.origin, bytes.fromhex(public_hex))
    stored: list[str] = []
    with write_transaction(ledger.engine) as conn:
        for sig in signed.signatures:
            if (sig.name, sig.key_id) == (cp.origin, log_id) or len(sig.signature) != 72:
                continue  # the log's own signature, or not a timestamped cosignature
            exists = conn.execute(
                select(Cosignature.size).where(
                    Cosignature.size == cp.size,
                    Cosignature.witness == sig.name,
                    Cosignature.witness_key_id == sig.key_id.hex(),
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(Cosignature).values(
                        size=cp.size,
                        witness=sig.name,
                        witness_key_id=sig.key_id.hex(),
                        root=cp.root.hex(),
                        line=sig.line().rstrip("\n"),
                        received_at=datetime.now(UTC),
                    )
                )
                stored.append(sig.name)
    return stored


def cosignatures(ledger: Ledger) -> list[Cosignature]:
    return ledger._all(select(Cosignature).order_by(Cosignature.size.desc(), Cosignature.witness))
