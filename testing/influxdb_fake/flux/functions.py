"""The supported Flux functions (from, range, filter, keep, drop, group, sort, limit, tail, pivot, yield,
contains, now) and `builtins()`, the scope a query starts with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .aggregates import AGGREGATES, aggregate_window, bare_aggregate
from .arguments import bool_arg, columns_arg, int_arg, str_arg, stream_arg
from .errors import BucketNotFound, FluxError, Unsupported
from .evaluate import Context, apply, compare
from .tables import merge_tables, nulls_first, row_record, typed, with_tables
from .values import Builtin, FunctionValue, Stream, Table, Time, field_kind, kind


def _from(ctx: Context, args: dict[str, Any]) -> Stream:
    if "bucketID" in args or "host" in args or "org" in args or "orgID" in args or "token" in args:
        raise Unsupported("from() arguments other than bucket")
    if "bucket" not in args:
        raise FluxError("from: missing required argument 'bucket'")
    bucket = str_arg(args["bucket"], "from", "bucket")
    points = ctx.load_bucket(bucket)
    if points is None:
        raise BucketNotFound(f'failed to initialize execute state: could not find bucket "{bucket}"')
    series: dict[tuple[Any, ...], Table] = {}
    for point in points:
        tags = tuple(sorted(point.tags.items()))
        for field_key, value in point.fields.items():
            sid = (point.measurement, tags, field_key)
            table = series.get(sid)
            if table is None:
                columns = [("_time", "time"), ("_value", field_kind(value)), ("_field", "string"),
                           ("_measurement", "string")] + [(k, "string") for k, _ in tags]  # fmt: skip
                key_values = {"_field": field_key, "_measurement": point.measurement, **dict(tags)}
                table = Table(columns, ["_field", "_measurement", *[k for k, _ in tags]], key_values, [])
                series[sid] = table
            table.rows.append({**table.key_values, "_time": point.time_ns, "_value": value})
    tables = [series[sid] for sid in sorted(series)]
    for table in tables:
        table.rows.sort(key=lambda r: r["_time"])
    return Stream(tables, bucket, bounded=False)


def _time_bound(value: Any, ctx: Context, name: str) -> int:
    k = kind(value)
    if k == "time":
        return value.ns
    if k == "duration":
        return ctx.now_ns + value.ns
    if k == "int":
        return value * 1_000_000_000
    raise FluxError(f"range: {name} must be a time, a duration or an int (unix seconds), got {k}")


def _range(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "range")
    start = _time_bound(args["start"], ctx, "start")
    stop = _time_bound(args["stop"], ctx, "stop") if "stop" in args else ctx.now_ns
    out: list[Table] = []
    for table in stream.tables:
        if table.col_type("_time") != "time":
            raise FluxError("range: input table has no _time column of type time")
        rows = [
            {**row, "_start": start, "_stop": stop}
            for row in table.rows
            if row.get("_time") is not None and start <= row["_time"] < stop
        ]
        if not rows:
            continue
        columns = [("_start", "time"), ("_stop", "time")] + [
            c for c in table.columns if c[0] not in {"_start", "_stop"}
        ]
        key = ["_start", "_stop"] + [k for k in table.key if k not in {"_start", "_stop"}]
        out.append(Table(columns, key, {**table.key_values, "_start": start, "_stop": stop}, rows))
    return with_tables(stream, out, bounded=True)


def _filter(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "filter")
    fn = args["fn"]
    on_empty = str_arg(args.get("onEmpty", "drop"), "filter", "onEmpty")
    if on_empty not in {"drop", "keep"}:
        raise FluxError('filter: onEmpty must be "drop" or "keep"')
    if not isinstance(fn, FunctionValue) or len(fn.node.params) != 1:
        raise FluxError("filter: fn must be a function of one parameter, e.g. (r) => ...")
    out: list[Table] = []
    for table in stream.tables:
        rows = []
        for row in table.rows:
            verdict = apply(fn, {fn.node.params[0].name: row_record(table, row)}, None, ctx, "filter fn")
            if verdict is not None and not isinstance(verdict, bool):
                raise FluxError(f"filter: fn must return a bool, got {kind(verdict)}")
            if verdict is True:
                rows.append(row)
        if rows or on_empty == "keep":
            out.append(Table(table.columns, table.key, table.key_values, rows))
    return with_tables(stream, out)


def _project(stream: Stream, keep: Callable[[str], bool]) -> Stream:
    tables = []
    for table in stream.tables:
        columns = [c for c in table.columns if keep(c[0])]
        labels = {c[0] for c in columns}
        key = [k for k in table.key if k in labels]
        rows = [{k: v for k, v in row.items() if k in labels} for row in table.rows]
        tables.append(Table(columns, key, {k: table.key_values[k] for k in key}, rows))
    return with_tables(stream, merge_tables(tables, sort_keys=False))


def _keep(ctx: Context, args: dict[str, Any]) -> Stream:
    if "fn" in args:
        raise Unsupported("keep(fn: ...)")
    columns = set(columns_arg(args.get("columns", []), "keep"))
    return _project(stream_arg(args, "keep"), lambda c: c in columns)


def _drop(ctx: Context, args: dict[str, Any]) -> Stream:
    if "fn" in args:
        raise Unsupported("drop(fn: ...)")
    columns = set(columns_arg(args.get("columns", []), "drop"))
    return _project(stream_arg(args, "drop"), lambda c: c not in columns)


def _group(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "group")
    columns = columns_arg(args.get("columns", []), "group")
    mode = str_arg(args.get("mode", "by"), "group", "mode")
    if mode not in {"by", "except"}:
        raise FluxError('group: mode must be "by" or "except"')
    pieces: list[Table] = []
    for table in stream.tables:
        if mode == "by":
            key = [c for c, _ in table.columns if c in columns]
        else:
            key = [c for c, _ in table.columns if c not in columns]
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in table.rows:
            by_key.setdefault(tuple(row.get(k) for k in key), []).append(row)
        for values, rows in by_key.items():
            pieces.append(Table(list(table.columns), key, dict(zip(key, values, strict=True)), rows))
    return with_tables(stream, merge_tables(pieces, sort_keys=True))


def _sort(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "sort")
    columns = columns_arg(args.get("columns", ["_value"]), "sort")
    desc = bool_arg(args.get("desc", False), "sort", "desc")
    out = []
    for table in stream.tables:
        present = [c for c in columns if table.has(c)]
        rows = sorted(table.rows, key=lambda r: tuple(nulls_first(r.get(c)) for c in present), reverse=desc)
        out.append(Table(table.columns, table.key, table.key_values, rows))
    return with_tables(stream, out)


def _limit(from_end: bool) -> Callable[[Context, dict[str, Any]], Stream]:
    name = "tail" if from_end else "limit"

    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        stream = stream_arg(args, name)
        n = int_arg(args["n"], name, "n")
        offset = int_arg(args.get("offset", 0), name, "offset")
        if n < 0 or offset < 0:
            raise FluxError(f"{name}: n and offset must not be negative")
        out = []
        for table in stream.tables:
            rows = table.rows
            if from_end:
                end = len(rows) - offset
                chosen = rows[max(0, end - n) : max(0, end)]
            else:
                chosen = rows[offset : offset + n]
            out.append(Table(table.columns, table.key, table.key_values, chosen))
        return with_tables(stream, out)

    return impl


def _pivot(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "pivot")
    row_key = columns_arg(args["rowKey"], "pivot", "rowKey")
    column_key = columns_arg(args["columnKey"], "pivot", "columnKey")
    value_column = str_arg(args["valueColumn"], "pivot", "valueColumn")
    if not column_key:
        raise FluxError("pivot: columnKey must not be empty")
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for table in stream.tables:
        for c in [*row_key, *column_key, value_column]:
            if not table.has(c):
                raise FluxError(f'pivot: column "{c}" does not exist')
        removed = set(column_key) | {value_column}
        key = [k for k in table.key if k not in removed]
        key_values = {k: table.key_values[k] for k in key}
        gid = tuple((k, key_values[k]) for k in sorted(key))
        group = groups.setdefault(gid, {"key": key, "key_values": key_values, "base": [], "new": {}, "rows": {}})
        for label, typ in table.columns:
            if (label in key or label in row_key) and label not in [b[0] for b in group["base"]]:
                group["base"].append((label, typ))
        value_type = table.col_type(value_column)
        for row in table.rows:
            parts = [row.get(c) for c in column_key]
            if any(p is None for p in parts):
                raise FluxError("pivot: null value in a columnKey column")
            new_label = "_".join(
                str(typed(p, table.col_type(c) or "string")) for p, c in zip(parts, column_key, strict=True)
            )
            existing = group["new"].get(new_label)
            if existing is not None and existing != value_type:
                raise FluxError(
                    f"schema collision detected: column {new_label!r} is both of type {existing} and {value_type}"
                )
            group["new"][new_label] = value_type
            rk = tuple(row.get(c) for c in row_key)
            out_row = group["rows"].setdefault(rk, {**key_values, **{c: row.get(c) for c in row_key}})
            out_row[new_label] = row.get(value_column)
    out: list[Table] = []
    for group in groups.values():
        base_labels = {b[0] for b in group["base"]}
        new_columns = [(label, typ) for label, typ in group["new"].items() if label not in base_labels]
        rows = [group["rows"][rk] for rk in sorted(group["rows"], key=lambda t: tuple(nulls_first(v) for v in t))]
        out.append(Table(group["base"] + new_columns, group["key"], group["key_values"], rows))
    return with_tables(stream, out)


def _yield(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = stream_arg(args, "yield")
    name = str_arg(args.get("name", "_result"), "yield", "name")
    ctx.results.append((name, stream))
    ctx.yielded.add(id(stream))
    return stream


def _contains(ctx: Context, args: dict[str, Any]) -> bool:
    values = args["set"]
    if not isinstance(values, list):
        raise FluxError(f"contains: set must be an array, got {kind(values)}")
    value = args["value"]
    if value is None:
        return False
    return any(compare("==", value, item, "contains") for item in values)


def _now(ctx: Context, args: dict[str, Any]) -> Time:
    return Time(ctx.now_ns)


def builtins() -> dict[str, Any]:
    table_fns: dict[str, Builtin] = {
        "from": Builtin(
            "from",
            {"bucket": False, "bucketID": False, "host": False, "org": False, "orgID": False, "token": False},
            _from,
        ),
        "range": Builtin("range", {"tables": True, "start": True, "stop": False}, _range, pipe=True),
        "filter": Builtin("filter", {"tables": True, "fn": True, "onEmpty": False}, _filter, pipe=True),
        "keep": Builtin("keep", {"tables": True, "columns": False, "fn": False}, _keep, pipe=True),
        "drop": Builtin("drop", {"tables": True, "columns": False, "fn": False}, _drop, pipe=True),
        "group": Builtin("group", {"tables": True, "columns": False, "mode": False}, _group, pipe=True),
        "sort": Builtin("sort", {"tables": True, "columns": False, "desc": False}, _sort, pipe=True),
        "limit": Builtin("limit", {"tables": True, "n": True, "offset": False}, _limit(False), pipe=True),
        "tail": Builtin("tail", {"tables": True, "n": True, "offset": False}, _limit(True), pipe=True),
        "pivot": Builtin(
            "pivot", {"tables": True, "rowKey": True, "columnKey": True, "valueColumn": True}, _pivot, pipe=True
        ),
        "aggregateWindow": Builtin(
            "aggregateWindow",
            {
                "tables": True,
                "every": True,
                "fn": True,
                "period": False,
                "offset": False,
                "location": False,
                "column": False,
                "timeSrc": False,
                "timeDst": False,
                "createEmpty": False,
            },
            aggregate_window,
            pipe=True,
        ),
        "yield": Builtin("yield", {"tables": True, "name": False}, _yield, pipe=True),
        "contains": Builtin("contains", {"value": True, "set": True}, _contains),
        "now": Builtin("now", {}, _now),
    }
    for name in sorted(AGGREGATES):
        table_fns[name] = Builtin(name, {"tables": True, "column": False}, bare_aggregate(name), pipe=True)
    return {**table_fns, "true": True, "false": False}
