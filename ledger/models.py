"""The ledger's tables as SQLAlchemy 2.0 typed declarative models.

``entries`` is the hash chain: one row per appended record, in ``seq`` order, carrying the hash of
the record's content, the previous entry's hash and a signature. The record itself lives in a typed
table keyed by the same ``seq`` (``evaluations`` with its ``measurements``, ``frontier_advances``), so
queries use ordinary indexed columns while ``verify`` re-derives each hash from those columns.

Other components may keep their own tables in the same database by subclassing :class:`Base` and
adding an alembic revision (see docs/ledger.md); only the tables in :data:`APPEND_ONLY_TABLES` are
frozen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Mapper,
    ORMExecuteState,
    Session,
    mapped_column,
    relationship,
)
from sqlalchemy.types import TypeDecorator

from ledger.errors import AppendOnlyError

# INTEGER PRIMARY KEY is SQLite's 64-bit rowid alias: no second b-tree for the chain position.
Seq = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no zone; it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SigningKey(Base):
    """Public half of every key that signed an entry; private keys never enter the database."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))  # raw Ed25519 public key, hex
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChainHead(Base):
    """The signed (seq, hash) of the newest entry: without it, deleting the last rows goes unnoticed.

    It is also the row appenders lock, so two writers can never both extend the same head.
    """

    __tablename__ = "chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="chain_head_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Seq)
    entry_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))
    signature: Mapped[str | None] = mapped_column(String(128))


class Entry(Base):
    __tablename__ = "entries"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(24))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(ForeignKey("signing_keys.key_id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)
    signature: Mapped[str] = mapped_column(String(128))


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_commit_sha", "commit_sha"),
        Index("ix_evaluations_author_finished", "author", "finished_at"),
        Index("ix_evaluations_finished_at", "finished_at"),
    )

    seq: Mapped[int] = mapped_column(Seq, ForeignKey("entries.seq"), primary_key=True, autoincrement=False)
    repo: Mapped[str] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    base_commit: Mapped[str | None] = mapped_column(String(64))
    frontier_commit: Mapped[str | None] = mapped_column(String(64))
    gpu: Mapped[str] = mapped_column(String(200))
    gpu_class: Mapped[str] = mapped_column(String(100))
    basket: Mapped[str] = mapped_column(String(100))
    evalbot_version: Mapped[str] = mapped_column(String(50))
    policy_hash: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(8))
    reasons: Mapped[str] = mapped_column(Text)  # canonical JSON list of strings
    verdict: Mapped[str] = mapped_column(Text)  # the full verdict document, canonical JSON

    entry: Mapped[Entry] = relationship(lazy="raise")
    measurements: Mapped[list[Measurement]] = relationship(
        order_by="Measurement.model", lazy="raise", back_populates="evaluation"
    )


class Measurement(Base):
    """One basket model's numbers for an evaluation; hashed as part of its evaluation."""

    __tablename__ = "measurements"

    evaluation_seq: Mapped[int] = mapped_column(Seq, ForeignKey("evaluations.seq"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens_per_s: Mapped[float | None] = mapped_column(Double)
    frontier_tokens_per_s: Mapped[float | None] = mapped_column(Double)
    speedup: Mapped[float | None] = mapped_column(Double)
    speedup_ci_low: Mapped[float | None] = mapped_column(Double)
    speedup_ci_high: Mapped[float | None] = mapped_column(Double)
    gates_passed: Mapped[bool] = mapped_column(Boolean)

    evaluation: Mapped[Evaluation] = relationship(lazy="raise", back_populates="measurements")


class FrontierAdvance(Base):
    """A base-branch commit that beat the previous frontier of a (basket, GPU class)."""

    __tablename__ = "frontier_advances"
    __table_args__ = (Index("ix_frontier_basket_gpu_seq", "basket", "gpu_class", "seq"),)

    seq: Mapped[int] = mapped_column(Seq, ForeignKey("entries.seq"), primary_key=True, autoincrement=False)
    basket: Mapped[str] = mapped_column(String(100))
    gpu_class: Mapped[str] = mapped_column(String(100))
    commit_sha: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    previous_commit: Mapped[str | None] = mapped_column(String(64))
    delta: Mapped[float] = mapped_column(Double)  # fractional speedup over the previous frontier
    model_deltas: Mapped[str] = mapped_column(Text)  # canonical JSON {model: fractional speedup}
    evaluation_seq: Mapped[int | None] = mapped_column(Seq, ForeignKey("evaluations.seq"))
    advanced_at: Mapped[datetime] = mapped_column(UTCDateTime)

    entry: Mapped[Entry] = relationship(lazy="raise")


class TreeNode(Base):
    """A node of the RFC 9162 Merkle tree over the entries (:mod:`ledger.tlog`), stored as it is completed.

    ``level`` 0 holds the leaves (leaf ``idx`` is entry ``seq = idx + 1``; its hash is
    ``SHA-256(0x00 || entry hash)``); node ``(level, idx)`` covers leaves ``[idx·2^level,
    (idx+1)·2^level)``. Only perfect subtrees are stored, so a node never changes once written.
    """

    __tablename__ = "tlog_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))  # hex


class WitnessedCheckpoint(Base):
    """A checkpoint of another validator's log that this validator checked and cosigned, as a witness.

    One row per (origin, size): the newest row of an origin is what its next checkpoint must extend.
    """

    __tablename__ = "tlog_witnessed"

    origin: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(16))  # the log's key (raw Ed25519 key id, as in signing_keys)
    root: Mapped[str] = mapped_column(String(64))  # hex
    checkpoint: Mapped[str] = mapped_column(Text)  # the signed checkpoint as received
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Cosignature(Base):
    """A witness's cosignature on one of this ledger's own checkpoints (c2sp.org/tlog-cosignature)."""

    __tablename__ = "tlog_cosignatures"

    size: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(200), primary_key=True)  # the witness's key name
    witness_key_id: Mapped[str] = mapped_column(String(8), primary_key=True)  # 4-byte note key ID, hex
    root: Mapped[str] = mapped_column(String(64))
    line: Mapped[str] = mapped_column(Text)  # the signature line, as received
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


APPEND_ONLY_TABLES: tuple[str, ...] = (
    "signing_keys",
    "entries",
    "evaluations",
    "measurements",
    "frontier_advances",
    "tlog_nodes",
)
_APPEND_ONLY_CLASSES = (SigningKey, Entry, Evaluation, Measurement, FrontierAdvance, TreeNode)


def _refuse_row_change(mapper: Mapper[Any], connection: Any, target: Any) -> None:
    raise AppendOnlyError(f"ledger rows are append-only: refusing to change a row of {mapper.local_table}")


for _cls in _APPEND_ONLY_CLASSES:
    event.listen(_cls, "before_update", _refuse_row_change)
    event.listen(_cls, "before_delete", _refuse_row_change)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_change(state: ORMExecuteState) -> None:
    """Bulk ``update()``/``delete()`` statements bypass the per-row mapper events above."""
    if (state.is_update or state.is_delete) and state.bind_mapper is not None:
        if state.bind_mapper.class_ in _APPEND_ONLY_CLASSES:
            verb = "UPDATE" if state.is_update else "DELETE"
            table = state.bind_mapper.local_table
            raise AppendOnlyError(f"ledger rows are append-only: refusing {verb} on {table}")
