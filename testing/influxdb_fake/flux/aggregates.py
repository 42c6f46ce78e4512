"""Aggregates and selectors: count, mean, sum, min, max, first, last, on whole tables or per window."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .arguments import bool_arg, str_arg, stream_arg
from .errors import FluxError, Unsupported
from .evaluate import Context
from .tables import with_tables
from .values import NUMERIC_KINDS, Builtin, Duration, Stream, Table, kind

MAX_EMPTY_WINDOWS = 100_000
AGGREGATES = {"mean", "sum", "count", "max", "min", "first", "last"}


def _selector(pick_last: bool) -> Callable[[Context, dict[str, Any]], Stream]:
    name = "last" if pick_last else "first"

    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        stream = stream_arg(args, name)
        column = str_arg(args.get("column", "_value"), name, "column")
        out = []
        for table in stream.tables:
            if not table.has(column):
                raise FluxError(f'{name}: column "{column}" does not exist')
            candidates = [r for r in table.rows if r.get(column) is not None]
            chosen = [candidates[-1 if pick_last else 0]] if candidates else []
            out.append(Table(table.columns, table.key, table.key_values, chosen))
        return with_tables(stream, out)

    return impl


def _aggregate(fn: str, table: Table, column: str, rows: list[dict[str, Any]]) -> tuple[Any, str, dict | None]:
    """Return (value, value type, selected row or None)."""
    vtype = table.col_type(column)
    if vtype is None:
        raise FluxError(f'{fn}: column "{column}" does not exist')
    present = [r for r in rows if r.get(column) is not None]
    if fn == "count":
        return len(present), "int", None
    if fn in {"first", "last"}:
        chosen = (present[0] if fn == "first" else present[-1]) if present else None
        return (chosen[column] if chosen else None), vtype, chosen
    if vtype not in NUMERIC_KINDS:
        raise FluxError(f"{fn}: unsupported aggregate column type {vtype}")
    values = [r[column] for r in present]
    if fn == "mean":
        return (math.fsum(values) / len(values) if values else None), "float", None
    if fn == "sum":
        if not values:
            return None, vtype, None
        return (math.fsum(values) if vtype == "float" else sum(values)), vtype, None
    if not present:
        return None, vtype, None
    chosen = (max if fn == "max" else min)(present, key=lambda r: r[column])
    return chosen[column], vtype, chosen


def aggregate_window(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "aggregateWindow")
    every = args["every"]
    if kind(every) != "duration" or every.ns <= 0:
        raise FluxError(f"aggregateWindow: every must be a positive duration, got {kind(every)}")
    period = args.get("period", every)
    if kind(period) != "duration" or period.ns != every.ns:
        raise Unsupported("aggregateWindow(period:) different from every")
    if "location" in args:
        raise Unsupported("aggregateWindow(location:)")
    offset = args.get("offset", Duration(0))
    if kind(offset) != "duration":
        raise FluxError("aggregateWindow: offset must be a duration")
    fn = args["fn"]
    if not isinstance(fn, Builtin) or fn.name not in AGGREGATES:
        raise Unsupported(
            "aggregateWindow fn other than " + ", ".join(sorted(AGGREGATES)) + " (custom functions are not supported)"
        )
    column = str_arg(args.get("column", "_value"), "aggregateWindow", "column")
    time_src = str_arg(args.get("timeSrc", "_stop"), "aggregateWindow", "timeSrc")
    time_dst = str_arg(args.get("timeDst", "_time"), "aggregateWindow", "timeDst")
    if time_src not in {"_start", "_stop"}:
        raise FluxError('aggregateWindow: timeSrc must be "_start" or "_stop"')
    create_empty = bool_arg(args.get("createEmpty", True), "aggregateWindow", "createEmpty")
    selector = fn.name in {"first", "last", "max", "min"}
    step, shift = every.ns, offset.ns % every.ns
    out: list[Table] = []
    for table in stream.tables:
        for needed in ("_start", "_stop", "_time"):
            if table.col_type(needed) != "time":
                raise FluxError(f"aggregateWindow: input table is missing time column {needed} (call range() first)")
        if table.rows:
            bounds_start = table.key_values.get("_start", table.rows[0]["_start"])
            bounds_stop = table.key_values.get("_stop", table.rows[0]["_stop"])
        elif "_start" in table.key_values and "_stop" in table.key_values:
            bounds_start, bounds_stop = table.key_values["_start"], table.key_values["_stop"]
        else:
            continue
        by_window: dict[int, list[dict[str, Any]]] = {}
        for row in table.rows:
            if row.get("_time") is not None:
                by_window.setdefault((row["_time"] - shift) // step, []).append(row)
        rows_out: list[dict[str, Any]] = []
        value_type: str | None = None
        first, last = (bounds_start - shift) // step, (bounds_stop - 1 - shift) // step
        if create_empty and last - first >= MAX_EMPTY_WINDOWS:
            raise Unsupported(f"aggregateWindow creating more than {MAX_EMPTY_WINDOWS} windows per table")
        indexes = range(first, last + 1) if create_empty else sorted(i for i in by_window if first <= i <= last)
        for index in indexes:
            w_start = max(index * step + shift, bounds_start)
            w_stop = min((index + 1) * step + shift, bounds_stop)
            members = by_window.get(index, [])
            value, value_type, chosen = _aggregate(fn.name, table, column, members)
            if selector and chosen is not None:
                row = dict(chosen)
            elif selector:
                row = {label: table.key_values.get(label) for label, _ in table.columns}
            else:
                row = dict(table.key_values)
            row[column] = value
            row[time_dst] = w_stop if time_src == "_stop" else w_start
            rows_out.append(row)
        if value_type is None:
            value_type = _aggregate(fn.name, table, column, [])[1]
        if selector:
            columns = list(table.columns)
        else:
            columns = [
                (label, typ) for label, typ in table.columns if label in table.key or label in {column, time_dst}
            ]
            columns = [(label, value_type if label == column else typ) for label, typ in columns]
        if not any(label == time_dst for label, _ in columns):
            columns.append((time_dst, "time"))
        if not any(label == column for label, _ in columns):
            columns.append((column, value_type))
        if rows_out or create_empty:
            out.append(Table(columns, list(table.key), dict(table.key_values), rows_out))
    return with_tables(stream, out)


def bare_aggregate(name: str) -> Callable[[Context, dict[str, Any]], Stream]:
    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        if name in {"first", "last"}:
            return _selector(name == "last")(ctx, args)
        stream = stream_arg(args, name)
        column = str_arg(args.get("column", "_value"), name, "column")
        out = []
        for table in stream.tables:
            value, vtype, chosen = _aggregate(name, table, column, table.rows)
            if name in {"max", "min"}:
                out.append(Table(table.columns, table.key, table.key_values, [chosen] if chosen else []))
                continue
            columns = [(label, typ) for label, typ in table.columns if label in table.key]
            columns.append((column, vtype))
            out.append(Table(columns, table.key, table.key_values, [{**table.key_values, column: value}]))
        return with_tables(stream, out)

    return impl
