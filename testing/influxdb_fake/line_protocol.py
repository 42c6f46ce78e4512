"""Strict parser for InfluxDB v2 line protocol.

Rules follow InfluxData's line-protocol reference (docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/)
and, where the reference is silent, the behaviour of InfluxDB's own parser (models/points.go):
leading spaces/tabs are skipped, several spaces may separate the sections, trailing spaces are allowed,
blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FieldValue = float | int | str | bool

PRECISION_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

MIN_TIME_NS = -9223372036854775806
MAX_TIME_NS = 9223372036854775806
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
MAX_UINT = 2**64 - 1
MAX_STRING_BYTES = 64 * 1024
MAX_KEY_BYTES = 65535

_MEASUREMENT_ESCAPES = frozenset(", \\")
_KEY_ESCAPES = frozenset(",= \\")
_STRING_ESCAPES = frozenset('"\\')

_INT_RE = re.compile(r"-?[0-9]+i")
_UINT_RE = re.compile(r"[0-9]+u")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMESTAMP_RE = re.compile(r"-?[0-9]+")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


class UInt(int):
    """An unsigned integer field value (line protocol ``u`` suffix)."""


@dataclass(frozen=True)
class ParsedLine:
    line_number: int
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


class LineError(ValueError):
    def __init__(self, line_number: int, text: str, reason: str) -> None:
        self.line_number = line_number
        self.text = text
        self.reason = reason
        super().__init__(f"line {line_number}: unable to parse '{text}': {reason}")


class LineProtocolError(ValueError):
    """Raised for a batch with at least one malformed line; lists every failing line."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        detail = "\n".join(str(e) for e in errors)
        super().__init__(f"failed to parse line protocol: errors encountered on line(s):\n{detail}")

    @property
    def first_line(self) -> int:
        return self.errors[0].line_number


class _Fail(Exception):
    pass


def field_type(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, UInt):
        return "unsigned"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


# The characters split_lines acts on; everything between them is skipped in one regex search.
_SPLIT_SPECIAL = re.compile(r'[\\ =,"\n]')


def split_lines(text: str) -> list[tuple[int, str]]:
    """Split a body into (first physical line number, logical line) pairs.

    A newline inside a quoted string field value does not end the line (as in InfluxDB's scanner);
    the parser then rejects that value, because the reference says newlines are not supported there.
    """
    out: list[tuple[int, str]] = []
    i = 0
    n = len(text)
    line_no = 1
    while i < n:
        start = i
        start_line = line_no
        quoted = False
        in_fields = False
        equals = commas = 0
        while i < n:
            special = _SPLIT_SPECIAL.search(text, i)
            if special is None:
                i = n
                break
            i = special.start()
            c = text[i]
            if c == "\\":
                if i + 1 < n and text[i + 1] == "\n":
                    line_no += 1
                i += 2
                continue
            if c == " ":
                in_fields = True
            if in_fields:
                if not quoted and c == "=":
                    equals += 1
                elif not quoted and c == ",":
                    commas += 1
                elif c == '"' and equals > commas:
                    quoted = not quoted
            if c == "\n":
                if not quoted:
                    break
                line_no += 1
            i += 1
        out.append((start_line, text[start : min(i, n)]))
        i += 1
        line_no += 1
    return out


def parse_batch(text: str, precision: str = "ns", default_time_ns: int = 0) -> list[ParsedLine]:
    """Parse a whole write body. Raises LineProtocolError naming every failing line."""
    if precision not in PRECISION_NS:
        raise ValueError(f"invalid precision {precision!r}")
    multiplier = PRECISION_NS[precision]
    default_time = (default_time_ns // multiplier) * multiplier
    points: list[ParsedLine] = []
    errors: list[LineError] = []
    for line_no, line in split_lines(text):
        stripped = line.lstrip(" \t\0")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            points.append(_parse_line(stripped, line_no, multiplier, default_time))
        except _Fail as exc:
            errors.append(LineError(line_no, stripped, str(exc)))
    if errors:
        raise LineProtocolError(errors)
    return points


def _unescape(raw: str, escapable: frozenset[str]) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw) and raw[i + 1] in escapable:
            out.append(raw[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _scan(line: str, i: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` at or after i (len(line) if none)."""
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n:
            i += 2
            continue
        if c in stops:
            return i
        i += 1
    return n


def _check_name(kind: str, name: str) -> None:
    if name.startswith("_"):
        raise _Fail(f"{kind} {name!r} is invalid: names beginning with '_' are reserved for InfluxDB")
    if "\n" in name:
        raise _Fail(f"{kind} {name!r} contains a newline")


def _parse_line(line: str, line_no: int, multiplier: int, default_time: int) -> ParsedLine:
    n = len(line)
    if line[0] == ",":
        raise _Fail("missing measurement")
    end = _scan(line, 0, ", ")
    if end >= n:
        raise _Fail("missing fields")
    measurement = _unescape(line[:end], _MEASUREMENT_ESCAPES)
    _check_name("measurement", measurement)
    i = end

    tags: dict[str, str] = {}
    if line[i] == ",":
        i += 1
        while True:
            key_end = _scan(line, i, ",= ")
            if key_end == i:
                raise _Fail("missing tag key")
            if key_end >= n or line[key_end] != "=":
                raise _Fail("missing tag value")
            key = _unescape(line[i:key_end], _KEY_ESCAPES)
            i = key_end + 1
            value_end = _scan(line, i, ",= ")
            if value_end == i and (i >= n or line[i] in ", "):
                raise _Fail(f"missing tag value for tag key {key!r} (tag values cannot be empty)")
            if value_end < n and line[value_end] == "=":
                raise _Fail(f"invalid tag format: unescaped '=' in the value of tag {key!r}")
            if value_end >= n:
                raise _Fail("missing fields")
            value = _unescape(line[i:value_end], _KEY_ESCAPES)
            _check_name("tag key", key)
            if "\n" in value:
                raise _Fail(f"tag {key!r} value contains a newline")
            if key in tags:
                raise _Fail(f"duplicate tags: {key!r}")
            tags[key] = value
            i = value_end + 1
            if line[value_end] == " ":
                break
    else:
        i += 1

    key_bytes = len(measurement.encode()) + sum(len(k.encode()) + len(v.encode()) + 2 for k, v in tags.items())
    if key_bytes > MAX_KEY_BYTES:
        raise _Fail(f"max key length exceeded: {key_bytes} > {MAX_KEY_BYTES}")

    while i < n and line[i] in " \t\0":
        i += 1
    if i >= n:
        raise _Fail("missing fields")

    fields: dict[str, FieldValue] = {}
    while True:
        key_end = _scan(line, i, ",= ")
        if key_end == i:
            raise _Fail("missing field key")
        if key_end >= n or line[key_end] != "=":
            raise _Fail("invalid field format: expected '=' after field key")
        key = _unescape(line[i:key_end], _KEY_ESCAPES)
        _check_name("field key", key)
        i = key_end + 1
        if i >= n or line[i] in ", ":
            raise _Fail(f"missing field value for field {key!r}")
        if line[i] == '"':
            value, i = _parse_string(line, i, key)
            if i < n and line[i] not in ", ":
                raise _Fail(f"invalid field format: unexpected {line[i]!r} after string value of field {key!r}")
        else:
            value_end = i
            while value_end < n and line[value_end] not in ", ":
                value_end += 1
            value = _parse_scalar(line[i:value_end], key)
            i = value_end
        if key in fields:
            raise _Fail(f"duplicate field key {key!r}")
        fields[key] = value
        if i >= n or line[i] == " ":
            break
        i += 1
        if i >= n:
            raise _Fail("missing field key after ','")

    while i < n and line[i] in " \t\0":
        i += 1
    if i >= n:
        return ParsedLine(line_no, measurement, tags, fields, default_time)
    ts_end = i
    while ts_end < n and line[ts_end] != " ":
        ts_end += 1
    raw_ts = line[i:ts_end]
    if not _TIMESTAMP_RE.fullmatch(raw_ts):
        raise _Fail(f"bad timestamp {raw_ts!r}: must be an integer")
    if line[ts_end:].strip(" "):
        raise _Fail("point is invalid: unexpected text after the timestamp")
    ts = int(raw_ts)
    if not MIN_INT <= ts <= MAX_INT:
        raise _Fail(f"bad timestamp {raw_ts!r}: value out of range")
    time_ns = ts * multiplier
    if not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise _Fail(f"time outside range {MIN_TIME_NS} - {MAX_TIME_NS} (timestamp {raw_ts} at this precision)")
    return ParsedLine(line_no, measurement, tags, fields, time_ns)


def _parse_string(line: str, i: int, key: str) -> tuple[str, int]:
    out: list[str] = []
    j = i + 1
    n = len(line)
    while j < n:
        c = line[j]
        if c == "\\" and j + 1 < n and line[j + 1] in _STRING_ESCAPES:
            out.append(line[j + 1])
            j += 2
            continue
        if c == '"':
            value = "".join(out)
            if "\n" in value:
                raise _Fail(f"string value of field {key!r} contains a newline, which line protocol does not support")
            if len(value.encode()) > MAX_STRING_BYTES:
                raise _Fail(f"string value of field {key!r} exceeds the 64KB length limit")
            return value, j + 1
        out.append(c)
        j += 1
    raise _Fail(f"unbalanced quotes in the value of field {key!r}")


def _parse_scalar(raw: str, key: str) -> FieldValue:
    first = raw[0]
    if first.isdigit() or first in ".-":
        if _INT_RE.fullmatch(raw):
            value = int(raw[:-1])
            if not MIN_INT <= value <= MAX_INT:
                raise _Fail(f"unable to parse integer {raw[:-1]} for field {key!r}: value out of range")
            return value
        if _UINT_RE.fullmatch(raw):
            value = int(raw[:-1])
            if value > MAX_UINT:
                raise _Fail(f"unable to parse unsigned {raw[:-1]} for field {key!r}: value out of range")
            return UInt(value)
        if _FLOAT_RE.fullmatch(raw) and raw not in {".", "-", "-."}:
            number = float(raw)
            if math.isinf(number):
                raise _Fail(f"invalid float {raw!r} for field {key!r}: out of range")
            return number
        raise _Fail(f"invalid number {raw!r} for field {key!r}")
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        raise _Fail(f"invalid number {raw!r} for field {key!r}: NaN and Inf are not supported")
    raise _Fail(f"invalid boolean {raw!r} for field {key!r} (strings must be double-quoted)")
