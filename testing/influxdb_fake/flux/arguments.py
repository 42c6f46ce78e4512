"""Checking the arguments a pipeline function receives; errors name the function and the argument."""

from __future__ import annotations

from typing import Any

from .errors import FluxError
from .values import Stream, kind


def stream_arg(args: dict[str, Any], fn: str) -> Stream:
    tables = args["tables"]
    if not isinstance(tables, Stream):
        raise FluxError(f"{fn}: expected a stream of tables as piped input, got {kind(tables)}")
    return tables


def columns_arg(value: Any, fn: str, name: str = "columns") -> list[str]:
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise FluxError(f"{fn}: {name} must be an array of strings")
    return value


def int_arg(value: Any, fn: str, name: str) -> int:
    if kind(value) != "int":
        raise FluxError(f"{fn}: {name} must be an int, got {kind(value)}")
    return value


def bool_arg(value: Any, fn: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise FluxError(f"{fn}: {name} must be a bool, got {kind(value)}")
    return value


def str_arg(value: Any, fn: str, name: str) -> str:
    if not isinstance(value, str):
        raise FluxError(f"{fn}: {name} must be a string, got {kind(value)}")
    return value
