"""Table operations shared by the pipeline functions: typed row records, merging, ordering."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..line_protocol import UInt
from .errors import FluxError
from .values import Record, Stream, Table, Time


def typed(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if typ == "time":
        return Time(value)
    if typ == "uint":
        return UInt(value)
    return value


def row_record(table: Table, row: dict[str, Any]) -> Record:
    return Record({label: typed(row.get(label), typ) for label, typ in table.columns})


def merge_tables(tables: Iterable[Table], sort_keys: bool) -> list[Table]:
    """Merge tables whose group keys are equal (appending rows in order), checking column types."""
    merged: dict[tuple[Any, ...], Table] = {}
    for table in tables:
        gid = table.group_id()
        target = merged.get(gid)
        if target is None:
            merged[gid] = Table(list(table.columns), list(table.key), dict(table.key_values), list(table.rows))
            continue
        for label, typ in table.columns:
            existing = target.col_type(label)
            if existing is None:
                target.columns.append((label, typ))
            elif existing != typ:
                raise FluxError(f"schema collision detected: column {label!r} is both of type {existing} and {typ}")
        target.rows.extend(table.rows)
    out = list(merged.values())
    if sort_keys:
        out.sort(key=lambda t: tuple(nulls_first(v) for _, v in t.group_id()))
    return out


def nulls_first(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


def with_tables(stream: Stream, tables: list[Table], *, bounded: bool | None = None) -> Stream:
    return Stream(tables, stream.bucket, stream.bounded if bounded is None else bounded)
