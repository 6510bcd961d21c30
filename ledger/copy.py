"""Copy a ledger into another database (``evalbot ledger migrate --to``): SQLite to PostgreSQL.

Rows are copied as they are, column by column, in the order foreign keys need (signing keys,
entries, evaluations, measurements, frontier advances, then the transparency log's tree nodes,
witnessed checkpoints and cosignatures), then the chain head: the hashes and
signatures are the source's own, so the copy verifies with the same keys, and a row changed on the
way would show as a broken link. The copy is one transaction on the target: it lands whole or not
at all. The source is verified first and left untouched; a target that already holds entries is
refused (a second copy would fork the chain).

``extra`` tables (other components' tables in the ledger database, e.g. the embedded queue) are
copied too, when present in both; their integer keys' sequences are moved past the copied ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, func, inspect, select, text, update

from ledger.engine import describe_url, make_engine
from ledger.errors import LedgerError
from ledger.models import (
    ChainHead,
    Cosignature,
    Entry,
    Evaluation,
    FrontierAdvance,
    Measurement,
    SigningKey,
    TreeNode,
    WitnessedCheckpoint,
)

TABLES: tuple[Table, ...] = tuple(
    m.__table__  # type: ignore[misc]
    for m in (SigningKey, Entry, Evaluation, Measurement, FrontierAdvance, TreeNode, WitnessedCheckpoint, Cosignature)
)
_BATCH = 500


class CopyError(LedgerError):
    pass


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]
    head_seq: int


def copy_ledger(source_url: str, target_url: str, extra: Sequence[Table] = ()) -> CopyReport:
    from ledger import Ledger, schema

    source_where, target_where = describe_url(source_url), describe_url(target_url)
    with Ledger.open(source_url) as ledger:
        report = ledger.verify()
        if not report.ok:
            problem = report.problem
            raise CopyError(f"{source_where}: does not verify ({problem.message if problem else 'broken'}); "
                            "not copied")
    source = make_engine(source_url, read_only=True)
    target = make_engine(target_url)
    try:
        schema.upgrade(target, target_where)
        present = set(inspect(source).get_table_names()) & set(inspect(target).get_table_names())
        tables = [t for t in (*TABLES, *extra) if t.name in present]
        counts: dict[str, int] = {}
        with source.connect() as src, target.begin() as dst:
            if dst.scalar(select(func.count()).select_from(Entry.__table__)):
                raise CopyError(f"{target_where}: already holds ledger entries; copy into an empty database")
            for table in tables:
                counts[table.name] = 0
                rows = src.execute(select(table)).mappings()
                while batch := rows.fetchmany(_BATCH):
                    dst.execute(table.insert(), [dict(r) for r in batch])
                    counts[table.name] += len(batch)
            head = src.execute(select(ChainHead.seq, ChainHead.entry_hash, ChainHead.key_id, ChainHead.signature)
                               .where(ChainHead.id == 1)).one()
            if head.seq > 0:
                dst.execute(update(ChainHead).where(ChainHead.id == 1).values(
                    seq=head.seq, entry_hash=head.entry_hash, key_id=head.key_id, signature=head.signature))
            if target.dialect.name == "postgresql":
                for table in tables:
                    _advance_sequences(dst, table)
    finally:
        source.dispose()
        target.dispose()
    return CopyReport(counts, head.seq)


def _advance_sequences(conn: object, table: Table) -> None:
    """PostgreSQL: rows inserted with their ids leave the id sequence behind; move it past them."""
    for column in table.primary_key.columns:
        if column.autoincrement is True or (column.autoincrement == "auto" and column.type.python_type is int
                                            and len(table.primary_key.columns) == 1 and not column.foreign_keys):
            conn.execute(text(  # type: ignore[attr-defined]
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                f"COALESCE((SELECT max({column.name}) FROM {table.name}), 0) + 1, false) "
                f"WHERE pg_get_serial_sequence('{table.name}', '{column.name}') IS NOT NULL"))
