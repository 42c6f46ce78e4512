"""Evaluating Flux expressions: identifiers, members, comparisons, logic, and calling functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import FluxError, Unsupported
from .parser import (
    COMPARISON_OPS,
    ArrayExpr,
    Binary,
    Block,
    Call,
    FuncExpr,
    Ident,
    Index,
    Literal,
    Member,
    Node,
    Pipe,
    Unary,
)
from .values import NUMERIC_KINDS, Builtin, Duration, FunctionValue, Record, StoredPoint, Stream, kind


@dataclass
class Context:
    now_ns: int
    load_bucket: Callable[[str], Iterable[StoredPoint] | None]
    results: list[tuple[str, Stream]] = field(default_factory=list)
    yielded: set[int] = field(default_factory=set)


# fmt: off
KNOWN_UNSUPPORTED_FUNCTIONS = frozenset({
    "map", "reduce", "window", "fill", "distinct", "unique", "duplicate", "rename", "set", "union", "join",
    "quantile", "median", "spread", "stddev", "derivative", "difference", "elapsed", "increase", "integral",
    "movingAverage", "timedMovingAverage", "exponentialMovingAverage", "cumulativeSum", "histogram",
    "histogramQuantile", "top", "bottom", "highestMax", "highestAverage", "highestCurrent", "lowestMin",
    "lowestAverage", "lowestCurrent", "sample", "shift", "timeShift", "truncateTimeColumn", "columns", "keys",
    "keyValues", "string", "int", "float", "bool", "time", "duration", "uint", "length", "display",
    "findRecord", "findColumn", "getRecord", "getColumn", "tableFind", "to", "sleep", "stateCount",
    "stateDuration", "hourSelection", "holtWinters", "pearsonr", "cov", "covariance", "mode", "die", "buckets",
})
# fmt: on


def evaluate(node: Node, scope: dict[str, Any], ctx: Context) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ident):
        if node.name not in scope:
            if node.name in KNOWN_UNSUPPORTED_FUNCTIONS:
                raise Unsupported(f"{node.name}() ({node.where})")
            raise FluxError(f"error {node.where}: undefined identifier {node.name}")
        return scope[node.name]
    if isinstance(node, ArrayExpr):
        values = [evaluate(e, scope, ctx) for e in node.elements]
        kinds = {kind(v) for v in values}
        if len(kinds) > 1:
            raise FluxError(f"error {node.where}: array elements must all have the same type, got {sorted(kinds)}")
        return values
    if isinstance(node, Member):
        obj = evaluate(node.obj, scope, ctx)
        if not isinstance(obj, Record):
            raise FluxError(f"error {node.where}: cannot access property {node.prop!r} of a {kind(obj)}")
        return obj.get_label(node.prop)
    if isinstance(node, Index):
        obj = evaluate(node.obj, scope, ctx)
        index = evaluate(node.index, scope, ctx)
        if isinstance(obj, list) and kind(index) == "int":
            if not 0 <= index < len(obj):
                raise FluxError(f"error {node.where}: array index {index} out of bounds")
            return obj[index]
        raise FluxError(f"error {node.where}: cannot index a {kind(obj)} with a {kind(index)}")
    if isinstance(node, Pipe):
        piped = evaluate(node.arg, scope, ctx)
        return call(node.call, scope, ctx, piped)
    if isinstance(node, Call):
        return call(node, scope, ctx, None)
    if isinstance(node, Unary):
        return _unary(node, evaluate(node.arg, scope, ctx))
    if isinstance(node, Binary):
        if node.op in {"and", "or"}:
            return _logical(node, scope, ctx)
        if node.op in COMPARISON_OPS:
            return compare(node.op, evaluate(node.left, scope, ctx), evaluate(node.right, scope, ctx), node.where)
        raise Unsupported(f"arithmetic operator {node.op} ({node.where})")
    if isinstance(node, FuncExpr):
        return FunctionValue(node, scope)
    raise FluxError(f"cannot evaluate {type(node).__name__}")


def _unary(node: Unary, value: Any) -> Any:
    if node.op == "exists":
        return value is not None
    if node.op == "not":
        if value is None:
            return None
        if not isinstance(value, bool):
            raise FluxError(f"error {node.where}: type error: expected bool but found {kind(value)} for 'not'")
        return not value
    k = kind(value)
    if node.op == "+" and k in {"int", "float", "duration"}:
        return value
    if node.op == "-":
        if k in {"int", "float"}:
            return -value
        if k == "duration":
            return Duration(-value.ns)
    raise FluxError(f"error {node.where}: unary {node.op} is not defined for {k}")


def _logical(node: Binary, scope: dict[str, Any], ctx: Context) -> bool | None:
    left = evaluate(node.left, scope, ctx)
    _expect_bool(left, node)
    if node.op == "and" and left is False:
        return False
    if node.op == "or" and left is True:
        return True
    right = evaluate(node.right, scope, ctx)
    _expect_bool(right, node)
    if node.op == "and":
        if right is False:
            return False
        return None if left is None or right is None else True
    if right is True:
        return True
    return None if left is None or right is None else False


def _expect_bool(value: Any, node: Node) -> None:
    if value is not None and not isinstance(value, bool):
        raise FluxError(f"error {node.where}: type error: expected bool but found {kind(value)}")


def compare(op: str, left: Any, right: Any, where: str = "") -> bool | None:
    if left is None or right is None:
        return None
    lk, rk = kind(left), kind(right)
    if not (
        (lk in NUMERIC_KINDS and rk in NUMERIC_KINDS)
        or (lk == rk and lk in {"string", "time", "duration"})
        or (lk == rk == "bool" and op in {"==", "!="})
    ):
        raise FluxError(f"error {where}: type error: unsupported comparison {lk} {op} {rk}")
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def call(node: Call, scope: dict[str, Any], ctx: Context, piped: Any) -> Any:
    fn = evaluate(node.callee, scope, ctx)
    args = {name: evaluate(expr, scope, ctx) for name, expr in node.args}
    name = node.callee.name if isinstance(node.callee, Ident) else "function"
    return apply(fn, args, piped, ctx, f"{name} {node.where}")


def apply(fn: Any, args: dict[str, Any], piped: Any, ctx: Context, label: str) -> Any:
    if isinstance(fn, Builtin):
        for arg in args:
            if arg not in fn.params:
                raise FluxError(f"error calling {label}: unexpected argument {arg!r}")
        if piped is not None:
            if not fn.pipe:
                raise FluxError(f"error calling {label}: function does not take piped input")
            args = {**args, "tables": piped}
        elif fn.pipe and "tables" not in args:
            raise FluxError(f"error calling {label}: missing piped input (tables)")
        for param, required in fn.params.items():
            if required and param not in args:
                raise FluxError(f"error calling {label}: missing required argument {param!r}")
        return fn.impl(ctx, args)
    if isinstance(fn, FunctionValue):
        local = dict(fn.scope)
        names = {p.name for p in fn.node.params}
        for arg in args:
            if arg not in names:
                raise FluxError(f"error calling {label}: unexpected argument {arg!r}")
        for p in fn.node.params:
            if p.pipe:
                if piped is None and p.name not in args:
                    raise FluxError(f"error calling {label}: missing piped input ({p.name})")
                local[p.name] = piped if piped is not None else args[p.name]
            elif p.name in args:
                local[p.name] = args[p.name]
            elif p.default is not None:
                local[p.name] = evaluate(p.default, fn.scope, ctx)
            else:
                raise FluxError(f"error calling {label}: missing required argument {p.name!r}")
        body = fn.node.body
        if isinstance(body, Block):
            for stmt in body.statements:
                local[stmt.name] = evaluate(stmt.value, local, ctx)
            return evaluate(body.result, local, ctx)
        return evaluate(body, local, ctx)
    raise FluxError(f"error calling {label}: a {kind(fn)} is not a function")
