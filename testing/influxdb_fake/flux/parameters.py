"""Query parameters: the `extern` File AST influxdb-client sends for `params=`, and a JSON `params` object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..line_protocol import UInt
from .errors import FluxError, Unsupported
from .values import DURATION_UNITS_NS, Duration, Record, Time, kind, parse_rfc3339


def extern_bindings(extern: Any) -> dict[str, Any]:
    """Bindings from the request's `extern` File AST, as influxdb-client's `params=` sends them."""
    if extern is None:
        return {}
    if not isinstance(extern, dict):
        raise FluxError("extern must be a File object")
    if extern.get("imports"):
        raise Unsupported("imports in extern (e.g. profiler)")
    bindings: dict[str, Any] = {}
    for stmt in extern.get("body") or []:
        stype = stmt.get("type") if isinstance(stmt, dict) else None
        assignment = stmt.get("assignment") if stype == "OptionStatement" else stmt
        if stype not in {"OptionStatement", "VariableAssignment"} or not isinstance(assignment, dict):
            raise Unsupported(f"extern statement of type {stype!r}")
        if assignment.get("type") not in {None, "VariableAssignment"}:
            raise Unsupported(f"extern {assignment.get('type')} (only variable assignments)")
        ident = assignment.get("id") or {}
        name = ident.get("name") if isinstance(ident, dict) else None
        if not isinstance(name, str) or not name:
            raise FluxError("extern variable assignment without an identifier name")
        bindings[name] = ast_value(assignment.get("init"))
    return bindings


def ast_value(node: Any) -> Any:
    if not isinstance(node, dict):
        raise FluxError(f"extern expression must be an object, got {node!r}")
    ntype = node.get("type")
    value = node.get("value")
    try:
        if ntype == "StringLiteral" and isinstance(value, str):
            return value
        if ntype == "IntegerLiteral":
            return int(value)
        if ntype == "UnsignedIntegerLiteral":
            return UInt(int(value))
        if ntype == "FloatLiteral" and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if ntype == "BooleanLiteral" and isinstance(value, bool):
            return value
        if ntype == "DateTimeLiteral" and isinstance(value, str):
            return Time(parse_rfc3339(value))
        if ntype == "DurationLiteral":
            total = 0
            for part in node.get("values") or []:
                unit = part.get("unit")
                if unit in {"mo", "y"}:
                    raise Unsupported(f"calendar duration unit {unit!r} in extern")
                if unit not in DURATION_UNITS_NS:
                    raise FluxError(f"invalid duration unit {unit!r} in extern")
                total += int(part.get("magnitude")) * DURATION_UNITS_NS[unit]
            return Duration(total)
        if ntype == "UnaryExpression" and node.get("operator") in {"-", "+"}:
            inner = ast_value(node.get("argument"))
            if node["operator"] == "+":
                return inner
            if isinstance(inner, Duration):
                return Duration(-inner.ns)
            if kind(inner) in {"int", "float"}:
                return -inner
            raise FluxError(f"cannot negate a {kind(inner)} in extern")
        if ntype == "ArrayExpression":
            return [ast_value(e) for e in node.get("elements") or []]
    except (TypeError, ValueError) as exc:
        raise FluxError(f"invalid {ntype} in extern: {exc}") from exc
    if ntype in {"StringLiteral", "FloatLiteral", "BooleanLiteral", "DateTimeLiteral"}:
        raise FluxError(f"invalid value {value!r} for {ntype} in extern")
    raise Unsupported(f"extern expression of type {ntype!r}")


def params_record(params: Mapping[str, Any]) -> Record:
    def convert(value: Any) -> Any:
        if isinstance(value, bool | str | int | float):
            return value
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return Record({k: convert(v) for k, v in value.items()}, strict=True)
        raise FluxError(f"unsupported params value {value!r}")

    return Record({k: convert(v) for k, v in params.items()}, strict=True, name="params")
