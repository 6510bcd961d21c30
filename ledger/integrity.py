"""Corruption, told apart from tampering: values a ledger's own schema cannot read back.

A damaged file (a torn write, a bad disk, a hand edit that broke a value) holds rows whose values
are not of their column's type: text in a timestamp or integer column, a NULL where none may be,
JSON that does not parse, a table or column that is gone. Such a row cannot be read, so nothing can
be said about its hash either way; :func:`find_damage` names the first one (table, row, column and
the value) so the user learns *where* the file is damaged instead of reading a traceback, and
``verify`` reports it as corruption rather than as evidence of an edit.

The scan reads raw driver values (no type processing, which is what fails on such rows) and
decodes each one with its column's own result processor, so it finds exactly the values that make
the ordinary typed reads fail. It runs only after a read has failed, or inside ``verify``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Integer,
    String,
    Table,
    inspect,
    select,
    type_coerce,
)
from sqlalchemy.types import NullType, TypeDecorator, TypeEngine

from ledger.errors import LedgerError
from ledger.models import ChainHead, Entry, Evaluation, FrontierAdvance, Measurement, SigningKey, TreeNode

# Text columns that hold JSON, and the JSON type the writer always stores there.
JSON_COLUMNS: dict[tuple[str, str], type] = {
    ("evaluations", "reasons"): list,
    ("evaluations", "verdict"): dict,
    ("frontier_advances", "model_deltas"): dict,
}
LEDGER_TABLES: tuple[Table, ...] = tuple(
    m.__table__  # type: ignore[misc]
    for m in (SigningKey, ChainHead, Entry, Evaluation, Measurement, FrontierAdvance, TreeNode)
)
_SHOWN_CHARS = 40
_STREAM_ROWS = 10_000


class LedgerCorruptError(LedgerError):
    """The ledger's file or database is readable, but some of its data is not (see :class:`Damage`)."""


@dataclass(frozen=True)
class Damage:
    table: str
    row: str  # how the row is keyed: "seq 5", "evaluation_seq 5, model qwen3moe-tiny", "key_id ab12…"
    column: str | None  # None when the table itself is the problem
    detail: str
    seq: int | None = None  # the chain position the row belongs to, when it has one

    def __str__(self) -> str:
        if self.column is None:
            return f"table {self.table}: {self.detail}"
        return f"{self.table} row {self.row}, column {self.column}: {self.detail}"


@functools.lru_cache(maxsize=256)
def _bind_processor(dialect: Any, column: Column[Any]) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


def stored_form(dialect: Any, column: Column[Any], value: Any) -> Any:
    """What the writer stores for ``value`` in ``column``: the raw driver value its bind makes."""
    process = _bind_processor(dialect, column)
    return value if process is None else process(value)


def shown(value: Any) -> str:
    return _shown(value)


def base_type(sql_type: TypeEngine[Any]) -> TypeEngine[Any]:
    return _base_type(sql_type)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _base_type(sql_type: TypeEngine[Any]) -> TypeEngine[Any]:
    return sql_type.impl_instance if isinstance(sql_type, TypeDecorator) else sql_type


def value_problem(table: str, column: Column[Any], value: Any) -> str | None:
    """Why a decoded (typed) ``value`` cannot be what ``column`` holds, or None when it can."""
    if value is None:
        return None if column.nullable else "is NULL, which this column never holds"
    kind = _base_type(column.type)
    if isinstance(kind, DateTime):
        ok, expected = isinstance(value, datetime), "a timestamp"
    elif isinstance(kind, Boolean):
        ok, expected = isinstance(value, bool), "a boolean"
    elif isinstance(kind, Integer):  # BigInteger included
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(kind, Double):
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(kind, String):  # Text included
        ok, expected = isinstance(value, str), "text"
    else:
        ok, expected = True, ""
    if not ok:
        return f"{_shown(value)} is not {expected}"
    want = JSON_COLUMNS.get((table, column.name))
    if want is not None:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            return f"is not valid JSON ({exc.msg}, character {exc.pos}: {_shown(value)})"
        if not isinstance(parsed, want):
            return f"holds a JSON {type(parsed).__name__}, not the {want.__name__} written there"
        if table == "evaluations" and column.name == "reasons" and not all(isinstance(r, str) for r in parsed):
            return "holds a JSON list whose items are not all strings"
    return None


def row_problem(table: Table, row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(column, why) for the first value of a typed ``row`` of ``table`` that cannot be right."""
    for column in table.columns:
        if column.name in row and (why := value_problem(table.name, column, row[column.name])) is not None:
            return column.name, why
    return None


def missing_schema(conn: Connection) -> Damage | None:
    """A ledger table or column that is not in the database."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    for table in LEDGER_TABLES:
        if table.name not in present:
            return Damage(table.name, "", None, "is missing")
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                return Damage(table.name, "", column.name, "the column is missing")
    return None


def _row_key(table: Table, raw: Mapping[str, Any]) -> tuple[str, int | None]:
    """How a row is named in messages ("seq 5"), and its chain position when it has one."""
    shown = ", ".join(f"{c.name} {raw[c.name]}" for c in table.primary_key.columns)
    seq = raw.get("seq", raw.get("evaluation_seq"))
    return shown[: 2 * _SHOWN_CHARS], seq if isinstance(seq, int) and table.name != "chain_head" else None


def _raw_rows(conn: Connection, table: Table) -> Iterator[Mapping[str, Any]]:
    # NullType has no result processor: the driver's values arrive as they are stored.
    statement = select(*(type_coerce(c, NullType()).label(c.name) for c in table.columns)).select_from(table)
    statement = statement.order_by(*table.primary_key.columns)
    for row in conn.execution_options(yield_per=_STREAM_ROWS).execute(statement):
        yield row._mapping


def _processors(conn: Connection, table: Table) -> dict[str, Callable[[Any], Any] | None]:
    """Each column's result processor: what turns its raw driver value into the typed one."""
    found: dict[str, Callable[[Any], Any] | None] = {}
    for column in table.columns:
        try:
            found[column.name] = column.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
        except (TypeError, KeyError):
            # psycopg's numeric processor needs the server's type code; that driver returns typed values.
            found[column.name] = None
    return found


def _decode(processor: Callable[[Any], Any] | None, raw: Any) -> tuple[Any, str | None]:
    if processor is None or raw is None:
        return raw, None
    try:
        return processor(raw), None
    except Exception as exc:  # whatever the driver-level conversion raises is the damage itself
        return None, f"{_shown(raw)} cannot be read as this column's type ({type(exc).__name__})"


def _raw_problem(processor: Callable[[Any], Any] | None, table: str, column: Column[Any], raw: Any) -> str | None:
    value, why = _decode(processor, raw)
    if why is None:
        why = value_problem(table, column, value)
    # SQLite's boolean processor turns any integer (or text) into True: judge the stored value.
    exact = raw is None or type(raw) is bool or (type(raw) is int and raw in (0, 1))
    if why is None and isinstance(_base_type(column.type), Boolean) and not exact:
        why = f"{_shown(raw)} is not a boolean"
    return why


def _table_damage(conn: Connection, table: Table) -> Damage | None:
    """The first damaged row of ``table`` in primary-key order."""
    processors = _processors(conn, table)
    for raw in _raw_rows(conn, table):
        for column in table.columns:
            if (why := _raw_problem(processors[column.name], table.name, column, raw[column.name])) is not None:
                row, seq = _row_key(table, raw)
                return Damage(table.name, row, column.name, why, seq)
    return None


def find_damage(conn: Connection) -> Damage | None:
    """The first damaged value of the ledger (lowest chain position; key and head rows first)."""
    if (damage := missing_schema(conn)) is not None:
        return damage
    found = [d for d in (_table_damage(conn, table) for table in LEDGER_TABLES) if d is not None]
    return min(found, key=lambda d: -1 if d.seq is None else d.seq, default=None)


def corrupt_error(where: str, damage: Damage | None, cause: BaseException | None = None) -> LedgerCorruptError:
    """The one-line error for a ledger whose data cannot be read back."""
    if damage is None:
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else "unreadable data"
        return LedgerCorruptError(f"{where}: the ledger's data is corrupted ({detail.splitlines()[0]})")
    return LedgerCorruptError(f"{where}: the ledger's data is corrupted: {damage}")
