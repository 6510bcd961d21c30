"""The ledger as the rest of evalbot uses it: open, append signed entries, query.

Appends read the chain head and write the new entries and the new head in one transaction that
holds the write lock from its first statement, so concurrent writers queue up instead of forking
the chain, and a writer killed mid-append leaves the previous, complete chain behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, inspect, select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from ledger import chain, integrity, schema, tlog
from ledger import checkpoint as notes
from ledger.dberrors import translated
from ledger.engine import describe_url, make_engine, snapshot, sqlite_path, write_transaction
from ledger.errors import (
    FrontierConflictError,
    LedgerError,
    LedgerInputError,
    LedgerOpenError,
    SchemaVersionError,
)
from ledger.keys import Signer
from ledger.models import ChainHead, Entry, Evaluation, FrontierAdvance, Measurement, SigningKey
from ledger.records import AdvanceIn, EvaluationIn
from ledger.verify import VerifyReport, verify_chain

_HEX = frozenset("0123456789abcdef")


class Ledger:
    """One ledger database. Reads need no key; appends need the validator's :class:`Signer`."""

    def __init__(self, engine: Engine, where: str, signer: Signer | None) -> None:
        self.engine = engine
        self.where = where
        self.signer = signer

    @classmethod
    def open(cls, url: str, *, signer: Signer | None = None, create: bool = False) -> Ledger:
        """Open the ledger at ``url``; ``create`` makes a new one when the file/database is empty.

        Raises :class:`LedgerOpenError` for a missing, corrupted or foreign database, and
        :class:`SchemaVersionError` for a schema this evalbot does not read (older: migrate first).
        """
        where = describe_url(url)
        path = sqlite_path(url)
        if path is not None and not path.exists():
            if not create:
                raise LedgerOpenError(f"{where}: no ledger here (create one with `evalbot ledger migrate`)")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
        try:
            with translated(where), engine.connect() as conn:
                state = schema.status(conn, where)
            if state.state is schema.State.EMPTY:
                if not create:
                    raise LedgerOpenError(f"{where}: empty database, not a ledger (run `evalbot ledger migrate`)")
                with translated(where):
                    schema.upgrade(engine, where)
            elif state.state is schema.State.OLDER:
                raise SchemaVersionError(
                    f"{where}: ledger schema is at revision {state.revision}, this evalbot needs "
                    f"{state.head}; run `evalbot ledger migrate`"
                )
            else:
                with translated(where), engine.connect() as conn:
                    if (damage := integrity.missing_schema(conn)) is not None:
                        raise integrity.corrupt_error(where, damage)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, where, signer)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------------

    def record_evaluation(self, evaluation: EvaluationIn, *, once: bool = False) -> Evaluation:
        """Append one verdict; returns the stored row with its measurements and chain entry.

        ``once``: if an identical record (same content hash) of this commit is already in the
        ledger, return it instead of appending, so a caller that crashed between appending and
        noting it can simply record again. The check and the append share one transaction.
        """
        prepared = self._prepare([evaluation])
        content, columns, _ = prepared[0]
        with translated(self.where), write_transaction(self.engine) as conn:
            seq = self._identical(conn, Evaluation, columns["commit_sha"], content) if once else None
            if seq is None:
                (seq,) = self._append(conn, chain.EVALUATION, prepared)
        found = self.evaluation(seq)
        assert found is not None
        return found

    def record_evaluations(self, evaluations: Iterable[EvaluationIn], *, batch_size: int = 5000) -> int:
        """Append many verdicts, ``batch_size`` per transaction; returns how many were appended."""
        count = 0
        iterator = iter(evaluations)
        while batch := list(islice(iterator, batch_size)):
            prepared = self._prepare(batch)
            with translated(self.where), write_transaction(self.engine) as conn:
                count += len(self._append(conn, chain.EVALUATION, prepared))
        return count

    def record_frontier_advance(self, advance: AdvanceIn, *, once: bool = False) -> FrontierAdvance:
        """Append a frontier advance; refused if ``advance.previous_commit`` is no longer the frontier.

        ``once``: if an identical advance is already recorded, return it instead (a retry after a
        crash would otherwise be refused: the frontier has already moved to this commit).
        """
        columns = advance.columns()
        content = chain.advance_content(columns)
        with translated(self.where), write_transaction(self.engine) as conn:
            seq = self._identical(conn, FrontierAdvance, columns["commit_sha"], content) if once else None
            if seq is None:
                current = conn.execute(
                    select(FrontierAdvance.commit_sha)
                    .where(
                        FrontierAdvance.basket == columns["basket"],
                        FrontierAdvance.gpu_class == columns["gpu_class"],
                    )
                    .order_by(FrontierAdvance.seq.desc())
                    .limit(1)
                ).scalar_one_or_none()
                if current != columns["previous_commit"]:
                    raise FrontierConflictError(
                        f"frontier of {columns['basket']} on {columns['gpu_class']} is {current or 'not set'}, "
                        f"not {columns['previous_commit'] or 'not set'}: re-measure against the current frontier"
                    )
                self._check_evaluation_seq(conn, columns["evaluation_seq"])
                (seq,) = self._append(conn, chain.FRONTIER_ADVANCE, [(content, columns, [])])
        found = self._one(self._advances().where(FrontierAdvance.seq == seq))
        assert found is not None
        return found

    @staticmethod
    def _identical(conn: Connection, model: Any, commit_sha: str, content: dict[str, Any]) -> int | None:
        """The seq of an already recorded record of ``commit_sha`` with exactly this content."""
        return conn.execute(
            select(model.seq)
            .join(Entry, Entry.seq == model.seq)
            .where(model.commit_sha == commit_sha, Entry.content_hash == chain.content_hash(content))
            .order_by(model.seq)
            .limit(1)
        ).scalar_one_or_none()

    @staticmethod
    def _check_evaluation_seq(conn: Connection, seq: int | None) -> None:
        if seq is None:
            return
        kind = conn.execute(select(Entry.kind).where(Entry.seq == seq)).scalar_one_or_none()
        if kind != chain.EVALUATION:
            raise LedgerInputError(f"evaluation_seq: entry {seq} is not an evaluation")

    @staticmethod
    def _prepare(
        evaluations: Sequence[EvaluationIn],
    ) -> list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
        """Validate and hash-ready every record before the write lock is taken."""
        prepared = []
        for evaluation in evaluations:
            columns, measurements = evaluation.columns()
            prepared.append((chain.evaluation_content(columns, measurements), columns, measurements))
        return prepared

    def _append(
        self,
        conn: Connection,
        kind: str,
        prepared: Sequence[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]],
    ) -> list[int]:
        """Chain, sign and insert records inside the caller's :func:`write_transaction`; returns their seqs."""
        signer = self._require_signer()
        self._register_key(conn, signer)
        head = conn.execute(select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)).one()
        seq, prev = head.seq, head.entry_hash
        entries, records, children, seqs = [], [], [], []
        for content, columns, measurements in prepared:
            seq += 1
            recorded_at = datetime.now(UTC)
            digest = chain.content_hash(content)
            link = chain.entry_hash(
                seq=seq,
                kind=kind,
                recorded_at=recorded_at,
                key_id=signer.key_id,
                content_hash=digest,
                prev_hash=prev,
            )
            entries.append(
                {
                    "seq": seq,
                    "kind": kind,
                    "recorded_at": recorded_at,
                    "key_id": signer.key_id,
                    "content_hash": digest,
                    "prev_hash": prev,
                    "entry_hash": link,
                    "signature": signer.sign(chain.entry_message(link)),
                }
            )
            records.append({**columns, "seq": seq})
            children.extend({**m, "evaluation_seq": seq} for m in measurements)
            seqs.append(seq)
            prev = link
        conn.execute(insert(Entry), entries)
        tlog.append(conn, head.seq, [e["entry_hash"] for e in entries])
        conn.execute(insert(Evaluation if kind == chain.EVALUATION else FrontierAdvance), records)
        if children:
            conn.execute(insert(Measurement), children)
        conn.execute(
            update(ChainHead)
            .where(ChainHead.id == 1)
            .values(
                seq=seq,
                entry_hash=prev,
                key_id=signer.key_id,
                signature=signer.sign(chain.head_message(seq, prev)),
            )
        )
        return seqs

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise LedgerError(f"{self.where}: no signing key loaded; appending needs [ledger] signing_key")
        return self.signer

    def _register_key(self, conn: Connection, signer: Signer) -> None:
        stored = conn.execute(
            select(SigningKey.public_key).where(SigningKey.key_id == signer.key_id)
        ).scalar_one_or_none()
        if stored is None:
            conn.execute(
                insert(SigningKey).values(
                    key_id=signer.key_id, public_key=signer.public_hex, added_at=datetime.now(UTC)
                )
            )
        elif stored != signer.public_hex:
            raise LedgerError(f"{self.where}: key id {signer.key_id} is registered with a different public key")

    # -- queries ---------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Database errors as ledger errors, and a value that cannot be read back (a corrupted row)
        as one naming its table, row and column instead of the converter's traceback."""
        try:
            with translated(self.where):
                yield
        except (ValueError, TypeError, OverflowError) as exc:
            with translated(self.where), self.engine.connect() as conn:
                damage = integrity.find_damage(conn)
            raise integrity.corrupt_error(self.where, damage, exc) from None

    def _checked(self, row: Any) -> Any:
        """``row`` (and what was loaded with it), refused if one of its values cannot be right."""
        state = inspect(row)
        table = state.mapper.local_table
        found = integrity.row_problem(table, {c.key: getattr(row, c.key) for c in state.mapper.column_attrs})
        if found is not None:
            key = ", ".join(f"{c.name} {getattr(row, c.name)}" for c in table.primary_key.columns)
            damage = integrity.Damage(table.name, key, found[0], found[1])
            raise integrity.corrupt_error(self.where, damage)
        for name in ("entry", "measurements"):
            if name in state.mapper.relationships and name not in state.unloaded:
                loaded = getattr(row, name)
                for child in loaded if isinstance(loaded, list) else [loaded]:
                    self._checked(child)
        return row

    def _all(self, statement: Any) -> list[Any]:
        with self._reading(), Session(self.engine, expire_on_commit=False) as session:
            rows = list(session.scalars(statement).unique())
        return [self._checked(row) for row in rows]

    def _one(self, statement: Any) -> Any:
        rows = self._all(statement)
        return rows[0] if rows else None

    @staticmethod
    def _evaluations() -> Any:
        return select(Evaluation).options(selectinload(Evaluation.measurements), joinedload(Evaluation.entry))

    def evaluation(self, seq: int) -> Evaluation | None:
        return self._one(self._evaluations().where(Evaluation.seq == seq))

    def find(self, commit: str) -> list[Evaluation]:
        """Every evaluation of a commit, oldest first; ``commit`` may be an abbreviated id (≥ 4 digits)."""
        prefix = commit.strip().lower()
        if len(prefix) < 4 or len(prefix) > 64 or not set(prefix) <= _HEX:
            raise LedgerInputError(f"commit: expected 4 to 64 hex digits, got {commit!r}")
        # A range instead of LIKE: it uses the commit index on every backend ('g' sorts after 'f').
        return self._all(
            self._evaluations()
            .where(Evaluation.commit_sha >= prefix, Evaluation.commit_sha < prefix + "g")
            .order_by(Evaluation.seq)
        )

    def history(
        self, *, author: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Evaluation]:
        """Evaluations newest first, optionally by one author and/or finished at or after ``since``."""
        statement = self._evaluations().order_by(Evaluation.finished_at.desc(), Evaluation.seq.desc())
        if author is not None:
            statement = statement.where(Evaluation.author == author)
        if since is not None:
            if since.tzinfo is None:
                raise LedgerInputError(f"since: timestamp has no time zone ({since.isoformat()})")
            statement = statement.where(Evaluation.finished_at >= since)
        if limit is not None:
            statement = statement.limit(limit)
        return self._all(statement)

    @staticmethod
    def _advances() -> Any:
        return select(FrontierAdvance).options(joinedload(FrontierAdvance.entry))

    def frontier(self, basket: str, gpu_class: str) -> FrontierAdvance | None:
        """The advance that set the current frontier of (basket, GPU class); None before the first."""
        return self._one(
            self._advances()
            .where(FrontierAdvance.basket == basket, FrontierAdvance.gpu_class == gpu_class)
            .order_by(FrontierAdvance.seq.desc())
            .limit(1)
        )

    def frontiers(self) -> list[FrontierAdvance]:
        """The current frontier of every (basket, GPU class) that has one."""
        newest = (
            select(func.max(FrontierAdvance.seq))
            .group_by(FrontierAdvance.basket, FrontierAdvance.gpu_class)
            .scalar_subquery()
        )
        return self._all(
            self._advances()
            .where(FrontierAdvance.seq.in_(newest))
            .order_by(FrontierAdvance.basket, FrontierAdvance.gpu_class)
        )

    def frontier_history(self, *, basket: str | None = None, gpu_class: str | None = None) -> list[FrontierAdvance]:
        """Every advance, oldest first."""
        statement = self._advances().order_by(FrontierAdvance.seq)
        if basket is not None:
            statement = statement.where(FrontierAdvance.basket == basket)
        if gpu_class is not None:
            statement = statement.where(FrontierAdvance.gpu_class == gpu_class)
        return self._all(statement)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry: what an auditor compares with a published copy."""
        with self._reading(), self.engine.connect() as conn:
            row = conn.execute(select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)).one_or_none()
        if row is None:
            raise LedgerError(f"{self.where}: the chain head row is missing")
        if not isinstance(row.seq, int) or not isinstance(row.entry_hash, str):
            raise integrity.corrupt_error(self.where, integrity.Damage("chain_head", "id 1", "seq", "unreadable"))
        return row.seq, row.entry_hash

    def signing_keys(self) -> list[SigningKey]:
        """Every key that has signed entries (public halves only)."""
        return self._all(select(SigningKey).order_by(SigningKey.added_at, SigningKey.key_id))

    def count(self) -> int:
        """How many evaluations the ledger holds."""
        with self._reading(), self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Evaluation)).scalar_one()

    # -- the transparency log --------------------------------------------------------------------

    def tree_root(self, size: int | None = None) -> tuple[int, bytes]:
        """(size, root) of the Merkle tree over the first ``size`` entries (default: all of them)."""
        with self._reading(), snapshot(self.engine) as conn:
            head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            size = head if size is None else size
            if not 0 <= size <= head:
                raise LedgerInputError(f"tree size {size}: the ledger has {head} entries")
            return size, tlog.root(conn, size)

    def checkpoint(self, signer: Signer, origin: str, size: int | None = None) -> notes.SignedCheckpoint:
        """The signed checkpoint (C2SP tlog-checkpoint) of the tree of ``size`` entries (default: all)."""
        size, root = self.tree_root(size)
        return notes.sign(notes.Checkpoint(origin, size, root), signer)

    def inclusion_proof(self, seq: int, size: int) -> tuple[str, list[bytes]]:
        """(entry hash, RFC 9162 inclusion proof) of entry ``seq`` in the tree of ``size`` entries."""
        if not 1 <= seq <= size:
            raise LedgerInputError(f"entry {seq} is not in a tree of {size} entries")
        with self._reading(), snapshot(self.engine) as conn:
            head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            if size > head:
                raise LedgerInputError(f"tree size {size}: the ledger has {head} entries")
            entry_hash = conn.execute(select(Entry.entry_hash).where(Entry.seq == seq)).scalar_one_or_none()
            if entry_hash is None:
                raise LedgerInputError(f"{self.where}: no entry {seq}")
            return entry_hash, tlog.inclusion_proof(conn, seq - 1, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 9162 proof that the tree of ``new_size`` entries extends the tree of ``old_size``."""
        with self._reading(), snapshot(self.engine) as conn:
            head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            if not 0 <= old_size <= new_size <= head:
                raise LedgerInputError(
                    f"no consistency proof from {old_size} to {new_size} entries: the ledger has {head}"
                )
            return tlog.consistency_proof(conn, old_size, new_size)

    def verify(self, pubkeys: Sequence[str] | None = None) -> VerifyReport:
        """Re-derive every hash and check every signature; see :func:`ledger.verify.verify_chain`."""
        with self._reading(), snapshot(self.engine) as conn:
            return verify_chain(conn, pubkeys=pubkeys)
