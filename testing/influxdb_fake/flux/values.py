"""Flux values (times, durations, records, functions) and the data model (tables, streams)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..line_protocol import UInt
from .errors import FluxError

if TYPE_CHECKING:
    from .evaluate import Context
    from .parser import FuncExpr


@dataclass(frozen=True, order=True)
class Time:
    ns: int


@dataclass(frozen=True, order=True)
class Duration:
    ns: int


DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2}))?"
)


def parse_rfc3339(text: str) -> int:
    m = _RFC3339_RE.fullmatch(text)
    if not m:
        raise FluxError(f"invalid RFC3339 time {text!r}")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour = int(m[4] or 0)
    minute = int(m[5] or 0)
    second = int(m[6] or 0)
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise FluxError(f"invalid RFC3339 time {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise FluxError(f"invalid RFC3339 time {text!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = m[8]
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    frac = (m[7] or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac)


class Record(dict[str, Any]):
    """A Flux record. `strict` records (params) raise on a missing label; rows yield null."""

    def __init__(self, values: Mapping[str, Any], *, strict: bool = False, name: str = "record") -> None:
        super().__init__(values)
        self.strict = strict
        self.name = name

    def get_label(self, label: str) -> Any:
        if label in self:
            return self[label]
        if self.strict:
            raise FluxError(f"type error: {self.name} is missing label {label!r}")
        return None


@dataclass
class FunctionValue:
    node: FuncExpr
    scope: dict[str, Any]


@dataclass
class Builtin:
    name: str
    params: dict[str, bool]
    impl: Callable[[Context, dict[str, Any]], Any]
    pipe: bool = False


class StoredPoint(Protocol):
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, Any]
    time_ns: int


@dataclass
class Table:
    columns: list[tuple[str, str]]
    key: list[str]
    key_values: dict[str, Any]
    rows: list[dict[str, Any]]

    def col_type(self, label: str) -> str | None:
        for name, typ in self.columns:
            if name == label:
                return typ
        return None

    def has(self, label: str) -> bool:
        return self.col_type(label) is not None

    def group_id(self) -> tuple[Any, ...]:
        return tuple((label, self.key_values.get(label)) for label in sorted(self.key))


@dataclass
class Stream:
    tables: list[Table]
    bucket: str
    bounded: bool


NUMERIC_KINDS = frozenset({"int", "uint", "float"})


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, UInt):
        return "uint"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Time):
        return "time"
    if isinstance(value, Duration):
        return "duration"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Record):
        return "record"
    if isinstance(value, Stream):
        return "stream"
    if isinstance(value, FunctionValue | Builtin):
        return "function"
    return type(value).__name__


def field_kind(value: Any) -> str:
    k = kind(value)
    if k not in {"string", "int", "uint", "float", "bool"}:
        raise FluxError(f"unsupported stored value {value!r}")
    return k
