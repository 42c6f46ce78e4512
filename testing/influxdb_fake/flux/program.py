"""Running a whole query: bind the builtins and parameters, evaluate each statement, collect the results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import FluxError
from .evaluate import Context, evaluate
from .functions import builtins
from .parameters import extern_bindings, params_record
from .parser import Assign, parse
from .values import StoredPoint, Stream, Table


def run(
    query: str,
    *,
    now_ns: int,
    load_bucket: Callable[[str], Iterable[StoredPoint] | None],
    extern: Any = None,
    params: Mapping[str, Any] | None = None,
) -> list[tuple[str, list[Table]]]:
    """Evaluate a query; returns the results as (name, tables) in the order they were yielded."""
    statements = parse(query)
    ctx = Context(now_ns=now_ns, load_bucket=load_bucket)
    scope: dict[str, Any] = builtins()
    scope.update(extern_bindings(extern))
    if params is not None:
        scope["params"] = params_record(params)
    implicit: list[Stream] = []
    for stmt in statements:
        if isinstance(stmt, Assign):
            scope[stmt.name] = evaluate(stmt.value, scope, ctx)
            continue
        value = evaluate(stmt.expr, scope, ctx)
        if isinstance(value, Stream) and id(value) not in ctx.yielded:
            implicit.append(value)
    results = list(ctx.results)
    if implicit:
        if len(implicit) > 1 or any(name == "_result" for name, _ in results):
            raise FluxError('multiple results named "_result": use yield(name: ...) with distinct names')
        results.append(("_result", implicit[0]))
    if not results:
        raise FluxError("query produced no results: it has no expression that returns a stream of tables")
    names = [name for name, _ in results]
    for name in names:
        if names.count(name) > 1:
            raise FluxError(f"duplicate yield name {name!r}")
    for _, stream in results:
        if not stream.bounded:
            raise FluxError(
                f"cannot submit unbounded read to \"{stream.bucket}\"; try bounding 'from' with a call to 'range'"
            )
    return [(name, stream.tables) for name, stream in results]
