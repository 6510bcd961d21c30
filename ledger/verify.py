"""Audit a ledger: re-derive every hash from the stored columns and check every signature.

One pass over the chain in ``seq`` order (streamed, so a million rows need no memory to speak of)
finds the first entry that is missing, out of place, edited, or badly signed; separate queries find
record rows that no entry vouches for (inserted behind the chain's back); the signed chain head
catches rows removed from the end. The earliest problem by ``seq`` is reported.

A problem is one of two kinds. *Tampered*: the data reads back as valid values, but a hash, link or
signature does not match it (an edit, a deletion, an insertion, a forged key). *Corrupt*: a value
cannot be read as its column's type at all (text in a timestamp, broken JSON, a NULL key), which is
damage to the file; such a row cannot be hashed, so it is reported as what it is, naming the row
and column (:mod:`ledger.integrity`), and not as evidence of an edit.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Boolean, Column, Connection, DateTime, Row, select, type_coerce
from sqlalchemy.types import NullType

from ledger import chain, integrity, tlog
from ledger.canonical import GENESIS_HASH
from ledger.errors import LedgerInputError
from ledger.keys import key_id_of, public_key_from_hex, signature_valid
from ledger.models import ChainHead, Entry, Evaluation, FrontierAdvance, Measurement, SigningKey

_STREAM_ROWS = 10_000


class ProblemKind(enum.Enum):
    TAMPERED = "tampered"  # valid data that its hashes or signatures do not vouch for
    CORRUPT = "corrupt"  # data that cannot be read back as its column's type


@dataclass(frozen=True)
class Problem:
    seq: int  # the chain position where the ledger first stops being trustworthy
    message: str
    kind: ProblemKind = ProblemKind.TAMPERED


@dataclass(frozen=True)
class VerifyReport:
    entries: int  # how many entries were checked before the first problem (all of them if none)
    head_seq: int
    head_hash: str
    key_ids: tuple[str, ...]
    problem: Problem | None
    tree_root: str = ""  # hex root of the Merkle tree over the entries checked (verified against them)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _keys(
    conn: Connection, pubkeys: Sequence[str] | None
) -> tuple[dict[str, Ed25519PublicKey], Problem | None]:
    """Keys entries may be signed with: the given ones only, or else the ledger's own key table."""
    if pubkeys is not None:
        try:
            return {key_id_of(h): public_key_from_hex(h) for h in pubkeys}, None
        except ValueError:
            raise LedgerInputError("pubkeys: each must be a raw Ed25519 public key as 64 hex digits") from None
    keys: dict[str, Ed25519PublicKey] = {}
    for key_id, public_hex in conn.execute(select(SigningKey.key_id, SigningKey.public_key)):
        try:
            key = public_key_from_hex(public_hex)
        except (ValueError, TypeError):
            return keys, Problem(
                0,
                f"signing key {key_id}: stored public key {str(public_hex)[:20]!r} is not an Ed25519 key "
                "(64 hex digits): the row is corrupted",
                ProblemKind.CORRUPT,
            )
        if key_id_of(public_hex) != key_id:
            return keys, Problem(
                0, f"signing key {key_id}: stored public key does not match its id (replaced?)"
            )
        keys[key_id] = key
    return keys, None


def _stream(conn: Connection, statement: Any) -> Iterator[Row[Any]]:
    yield from conn.execution_options(yield_per=_STREAM_ROWS).execute(statement)


def _orphans(conn: Connection) -> Problem | None:
    """The first record row whose seq has no entry of the matching kind."""
    found: list[Problem] = []
    for model, kind in ((Evaluation, chain.EVALUATION), (FrontierAdvance, chain.FRONTIER_ADVANCE)):
        seq = conn.execute(
            select(model.seq)
            .outerjoin(Entry, Entry.seq == model.seq)
            .where((Entry.seq.is_(None)) | (Entry.kind != kind))
            .order_by(model.seq)
            .limit(1)
        ).scalar_one_or_none()
        if seq is not None:
            found.append(
                Problem(seq, f"{model.__tablename__} row {seq} has no {kind} entry in the chain (inserted?)")
            )
    return min(found, key=lambda p: p.seq, default=None)


class _Measurements:
    """Merges the measurement stream (ordered by evaluation) into the entry stream."""

    def __init__(self, rows: Iterator[Row[Any]]) -> None:
        self._rows = rows
        self._next: Row[Any] | None = next(rows, None)

    def take(self, seq: int) -> tuple[list[Mapping[str, Any]], int | None]:
        """Measurements of evaluation ``seq``, and the seq of any earlier rows nothing claimed."""
        stray = None
        while self._next is not None and self._next.evaluation_seq < seq:
            stray = stray if stray is not None else self._next.evaluation_seq
            self._next = next(self._rows, None)
        taken: list[Mapping[str, Any]] = []
        while self._next is not None and self._next.evaluation_seq == seq:
            taken.append(self._next._mapping)
            self._next = next(self._rows, None)
        return taken, stray

    def leftover(self) -> int | None:
        return None if self._next is None else self._next.evaluation_seq


def _check_entry(
    entry: Mapping[str, Any],
    record: Mapping[str, Any] | None,
    measurements: list[Mapping[str, Any]],
    prev: str,
    keys: Mapping[str, Ed25519PublicKey],
) -> str | None:
    seq, kind = entry["seq"], entry["kind"]
    if kind not in chain.KINDS:
        return f"entry {seq} has unknown kind {kind!r}"
    if record is None:
        return f"entry {seq} ({kind}) has lost its {kind.replace('_', ' ')} row (deleted?)"
    content = (
        chain.evaluation_content(record, measurements)
        if kind == chain.EVALUATION
        else chain.advance_content(record)
    )
    if chain.content_hash(content) != entry["content_hash"]:
        what = f"commit {record['commit_sha'][:12]}"
        return f"entry {seq} ({kind}, {what}): stored content does not match its hash (edited?)"
    if entry["prev_hash"] != prev:
        return f"entry {seq} does not link to the entry before it (rows removed, reordered or inserted)"
    link = chain.entry_hash(
        seq=seq,
        kind=kind,
        recorded_at=entry["recorded_at"],
        key_id=entry["key_id"],
        content_hash=entry["content_hash"],
        prev_hash=entry["prev_hash"],
    )
    if link != entry["entry_hash"]:
        return f"entry {seq}: its chain fields do not match its hash (edited?)"
    key = keys.get(entry["key_id"])
    if key is None:
        return f"entry {seq} is signed by key {entry['key_id']}, which is not a trusted key"
    if not signature_valid(key, entry["signature"], chain.entry_message(link)):
        return f"entry {seq}: bad signature (key {entry['key_id']})"
    return None


def _head_problem(
    conn: Connection, checked: int, last_hash: str, keys: Mapping[str, Ed25519PublicKey]
) -> Problem | None:
    head_row = conn.execute(select(ChainHead.__table__).where(ChainHead.id == 1)).one_or_none()
    if head_row is None:
        return Problem(
            checked + 1, "the chain head row is missing (cannot tell whether entries were removed)"
        )
    if head_row.seq != checked or head_row.entry_hash != last_hash:
        return Problem(
            min(head_row.seq, checked) + 1,
            f"the signed chain head says {head_row.seq} entries, the chain has {checked} "
            "(entries removed from the end, or added without the key)",
        )
    if checked == 0:
        return (
            None
            if head_row.entry_hash == GENESIS_HASH
            else Problem(1, "chain head of an empty chain is not genesis")
        )
    key = keys.get(head_row.key_id or "")
    if key is None or not signature_valid(
        key, head_row.signature or "", chain.head_message(head_row.seq, last_hash)
    ):
        return Problem(checked, "bad signature on the chain head")
    return None


def _corrupt(seq: int, table: str, row: str, found: tuple[str, str]) -> Problem:
    column, why = found
    return Problem(seq, f"{table} row {row}, column {column}: {why} (the row is corrupted)", ProblemKind.CORRUPT)


def _lossy(columns: Any) -> list[Column[Any]]:
    """Columns whose stored value SQLite decodes loosely: any integer reads as a boolean, any text
    that starts like a timestamp reads as one. verify also reads them raw and demands the exact form."""
    return [c for c in columns if isinstance(integrity.base_type(c.type), Boolean | DateTime)]


def _raw_label(prefix: str, column: Column[Any]) -> str:
    return f"raw_{prefix}{column.name}"


def _raw_columns(prefix: str, columns: Any) -> list[Any]:
    return [type_coerce(c, NullType()).label(_raw_label(prefix, c)) for c in _lossy(columns)]


# (table, raw label prefix) → its lossy columns with their raw labels; worked out once, used per row.
_LossyColumns = tuple[tuple[Column[Any], str], ...]


@functools.cache
def _lossy_labels(table: str, prefix: str) -> _LossyColumns:
    model = {"entries": Entry, "evaluations": Evaluation, "frontier_advances": FrontierAdvance}.get(table, Measurement)
    return tuple((c, _raw_label(prefix, c)) for c in _lossy(model.__table__.c))


def _stored_form(
    conn: Connection, table: str, prefix: str, row: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[str, Any, Any, Any] | None:
    """(column, raw, expected, value) of a value not stored exactly as the writer stores it (a
    gates_passed of 7), or None."""
    for column, label in _lossy_labels(table, prefix):
        raw, value = row[label], values[column.name]
        if value is None:
            continue
        expected = integrity.stored_form(conn.dialect, column, value)
        if type(raw) is not type(expected) or raw != expected:
            return column.name, raw, expected, value
    return None


def _stored_forms(
    conn: Connection,
    entry: Mapping[str, Any],
    record: Mapping[str, Any] | None,
    measurements: list[Mapping[str, Any]],
    is_evaluation: bool,
) -> Problem | None:
    if conn.dialect.name != "sqlite":
        return None  # server types hold exactly their type's values
    seq = entry["seq"]
    checks: list[tuple[str, str, Mapping[str, Any], Mapping[str, Any], str]] = [("entries", "", entry, entry, "")]
    if record is not None:
        table, prefix = ("evaluations", "e_") if is_evaluation else ("frontier_advances", "a_")
        checks.append((table, prefix, entry, record, ""))
    checks.extend(("measurements", "m_", m, m, f", model {m['model']}") for m in measurements)
    for table, prefix, row, values, more in checks:
        if (found := _stored_form(conn, table, prefix, row, values)) is not None:
            column, raw, expected, value = found
            key = f"evaluation_seq {seq}{more}" if table == "measurements" else f"seq {seq}"
            return Problem(
                seq,
                f"{table} row {key}, column {column}: stored {integrity.shown(raw)}, not "
                f"{integrity.shown(expected)}, the only form the writer stores for {value!r} (edited?)",
            )
    return None


def _record_damage(
    entry: Mapping[str, Any], record: Mapping[str, Any] | None, measurements: list[Mapping[str, Any]]
) -> Problem | None:
    """A value of this entry, its record or its measurements that cannot be what its column holds."""
    seq = entry["seq"]
    if (found := integrity.row_problem(Entry.__table__, entry)) is not None:  # type: ignore[arg-type]
        return _corrupt(seq, "entries", f"seq {seq}", found)
    if record is not None:
        model = Evaluation if entry["kind"] == chain.EVALUATION else FrontierAdvance
        if (found := integrity.row_problem(model.__table__, record)) is not None:  # type: ignore[arg-type]
            return _corrupt(seq, model.__tablename__, f"seq {seq}", found)
    for m in measurements:
        if (found := integrity.row_problem(Measurement.__table__, m)) is not None:  # type: ignore[arg-type]
            return _corrupt(seq, "measurements", f"evaluation_seq {seq}, model {m['model']}", found)
    return None


def verify_chain(conn: Connection, *, pubkeys: Sequence[str] | None = None) -> VerifyReport:
    """Check the whole ledger inside ``conn``'s (snapshot) transaction.

    ``pubkeys`` (raw hex) restricts trust to those keys; without it, the ledger's own key table is
    trusted, which proves internal consistency but not who wrote it.
    """
    checked = [0]  # entries fully checked so far, for the report when a value cannot be read
    try:
        return _verify_chain(conn, pubkeys, checked)
    except (ValueError, TypeError, OverflowError):
        # A value the driver or a column type could not convert: find and name it.
        damage = integrity.find_damage(conn)
        if damage is None:
            raise
        problem = Problem(damage.seq or 0, f"{damage} (the row is corrupted)", ProblemKind.CORRUPT)
        head_seq, head_hash = _head_or_none(conn)
        return VerifyReport(min(checked[0], max(problem.seq - 1, 0)), head_seq, head_hash, (), problem)


def _head_or_none(conn: Connection) -> tuple[int, str]:
    try:
        row = conn.execute(select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)).one_or_none()
    except (ValueError, TypeError, OverflowError):
        return 0, ""
    return (row.seq, row.entry_hash) if row is not None else (0, "")


def _verify_chain(conn: Connection, pubkeys: Sequence[str] | None, progress: list[int]) -> VerifyReport:
    keys, problem = _keys(conn, pubkeys)
    ev, adv = Evaluation.__table__.c, FrontierAdvance.__table__.c
    statement = (
        select(
            Entry.__table__,
            *[c.label(f"e_{c.name}") for c in ev],
            *[c.label(f"a_{c.name}") for c in adv],
            *_raw_columns("", Entry.__table__.c),
            *_raw_columns("e_", ev),
            *_raw_columns("a_", adv),
        )
        .outerjoin(Evaluation, Evaluation.seq == Entry.seq)
        .outerjoin(FrontierAdvance, FrontierAdvance.seq == Entry.seq)
        .order_by(Entry.seq)
    )
    ms = Measurement.__table__
    measurements = _Measurements(
        _stream(
            conn,
            select(ms, *_raw_columns("m_", ms.c)).order_by(Measurement.evaluation_seq, Measurement.model),
        )
    )
    tree = tlog.TreeCheck(conn)
    ev_fields = [(c.name, f"e_{c.name}") for c in ev]
    adv_fields = [(c.name, f"a_{c.name}") for c in adv]

    checked, prev = 0, GENESIS_HASH
    for row in _stream(conn, statement) if problem is None else ():
        entry = row._mapping
        seq = entry["seq"]
        if seq != checked + 1:
            problem = Problem(checked + 1, f"entry {checked + 1} is missing (the next entry is {seq})")
            break
        is_evaluation = entry["kind"] == chain.EVALUATION
        own, other = (ev_fields, adv_fields) if is_evaluation else (adv_fields, ev_fields)
        if entry[other[0][1]] is not None:
            problem = Problem(
                seq, f"entry {seq} ({entry['kind']}) also has a row in the other record table (inserted?)"
            )
            break
        record = None if entry[own[0][1]] is None else {name: entry[label] for name, label in own}
        taken, stray = measurements.take(seq)
        if not is_evaluation and taken and stray is None:
            stray = seq
        if stray is not None:
            problem = Problem(
                stray, f"measurement rows for {stray}, which is not an evaluation entry (inserted?)"
            )
            break
        problem = _record_damage(entry, record, taken) or _stored_forms(conn, entry, record, taken, is_evaluation)
        if problem is not None:
            break
        message = _check_entry(entry, record, taken, prev, keys) or tree.add(seq, entry["entry_hash"])
        if message is not None:
            problem = Problem(seq, message)
            break
        checked, prev = seq, entry["entry_hash"]
        progress[0] = checked

    if problem is None and (stray := measurements.leftover()) is not None:
        problem = Problem(
            stray, f"measurement rows for {stray}, which is not an evaluation entry (inserted?)"
        )
    if problem is None:
        problem = _head_problem(conn, checked, prev, keys)
    if problem is None and (stored := tlog.stored_count(conn)) != (expected := tlog.node_count(checked)):
        problem = Problem(
            checked + 1,
            f"tlog_nodes holds {stored} Merkle tree nodes, the tree of the chain's {checked} entries has "
            f"{expected} (nodes inserted, or left behind by removed entries)",
        )
    orphan = _orphans(conn)
    if orphan is not None and (problem is None or orphan.seq < problem.seq):
        problem = orphan
    head_seq, head_hash = _head_or_none(conn)
    return VerifyReport(
        entries=checked,
        head_seq=head_seq,
        head_hash=head_hash,
        key_ids=tuple(sorted(keys)),
        problem=problem,
        tree_root=tree.root().hex() if problem is None else "",
    )
