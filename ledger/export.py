"""Whole-table exports to CSV, JSON or Parquet, streamed in chunks so a million rows fit in memory.

Everything is read in one snapshot transaction, so the exported tables agree with each other even
while the bot appends.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Boolean, DateTime, Double, Engine, Integer, Select, select
from sqlalchemy.types import TypeDecorator, TypeEngine

from ledger.dberrors import translated
from ledger.engine import snapshot
from ledger.errors import LedgerInputError
from ledger.integrity import corrupt_error, find_damage
from ledger.models import Entry, Evaluation, FrontierAdvance, Measurement

FORMATS = ("csv", "json", "parquet")
TABLES: dict[str, Any] = {
    "evaluations": Evaluation,
    "measurements": Measurement,
    "frontier": FrontierAdvance,
    "entries": Entry,
}
_CHUNK_ROWS = 50_000


def _statement(table: str) -> Select[Any]:
    model = TABLES[table]
    order = (Measurement.evaluation_seq, Measurement.model) if model is Measurement else (model.seq,)
    return select(model.__table__).order_by(*order)


def _arrow_type(sql_type: TypeEngine[Any]) -> pa.DataType:
    """Parquet types from the column types, so a chunk whose column is all NULL keeps its type."""
    if isinstance(sql_type, TypeDecorator):
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(sql_type, Boolean):
        return pa.bool_()
    if isinstance(sql_type, Double):
        return pa.float64()
    if isinstance(sql_type, Integer):  # BigInteger included
        return pa.int64()
    return pa.string()


def _json_chunk(frame: pd.DataFrame) -> str:
    """The records of one chunk without the surrounding brackets, to splice into one JSON array."""
    return frame.to_json(orient="records", date_format="iso", date_unit="us", force_ascii=False)[1:-1]


def export(engine: Engine, where: str, table: str, fmt: str, out: Path | None) -> int:
    """Write ``table`` to ``out`` (stdout when None, except parquet); returns the number of rows."""
    if table not in TABLES:
        raise LedgerInputError(f"--table: must be one of {', '.join(TABLES)}, got {table!r}")
    if fmt not in FORMATS:
        raise LedgerInputError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and out is None:
        raise LedgerInputError("--format parquet writes a binary file: give --out PATH")
    try:
        return _export(engine, where, table, fmt, out)
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        # A stored value its column's type (or Parquet's) cannot hold: name it, keep no half file.
        if out is not None:
            out.unlink(missing_ok=True)
        with translated(where), engine.connect() as conn:
            damage = find_damage(conn)
        raise corrupt_error(where, damage, exc) from None


def _export(engine: Engine, where: str, table: str, fmt: str, out: Path | None) -> int:
    statement = _statement(table)
    schema = pa.schema([(c.name, _arrow_type(c.type)) for c in statement.selected_columns])
    rows = 0
    with translated(where), snapshot(engine) as conn:
        chunks = pd.read_sql(statement, conn, chunksize=_CHUNK_ROWS)
        if fmt == "parquet":
            assert out is not None
            with pq.ParquetWriter(out, schema) as writer:
                for frame in chunks:
                    writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                    rows += len(frame)
                if rows == 0:
                    writer.write_table(schema.empty_table())
            return rows
        handle: IO[str] = sys.stdout if out is None else out.open("w", encoding="utf-8", newline="")
        try:
            if fmt == "csv":
                # The header comes from the columns, not from a chunk: an empty table may arrive as
                # no chunk at all or as one empty chunk, and either way it gets the header once.
                handle.write(",".join(c.name for c in statement.selected_columns) + "\n")
            else:
                handle.write("[")
            for frame in chunks:
                if fmt == "csv":
                    frame.to_csv(handle, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
                elif len(frame):
                    handle.write(("," if rows else "") + _json_chunk(frame))
                rows += len(frame)
            if fmt == "json":
                handle.write("]\n")
        finally:
            if out is not None:
                handle.close()
    return rows
