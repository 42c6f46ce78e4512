"""What the REST API accepts: device ids, durations and field lists, checked before any store call.

Every value a request carries is matched against a strict pattern or a fixed list here, so nothing
a client types can reach a Flux or SQL query as text. A bad value raises `BadParameter`, which the
API turns into a 400 with a sentence saying what to send instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rtds.errors import RtdsError
from rtds.schema import DEVICE_ID_PATTERN, FIELD_TYPES, STORED_FIELDS, is_valid_device_id
from rtds.settings import parse_duration_s

MAX_DURATION_S = 30 * 86_400.0
DEFAULT_HISTORY_DURATION = "5m"
DEFAULT_HISTORY_FIELDS = ("speed",)
# Past an hour, a history without `every` is averaged into about this many points.
RAW_HISTORY_MAX_S = 3_600.0
AVERAGED_POINTS = 1_000
HISTORY_PARAMETERS = ("duration", "fields", "every")

_DURATION_SYNTAX = re.compile(r"([0-9]{1,12})(ms|s|m|h|d)")
_SHOWN_CHARS = 60
# Fields with a history: the numbers. `replayed` (true/false) is in /latest; a series of it, averaged or not,
# says nothing a chart can show.
HISTORY_FIELDS = tuple(name for name in STORED_FIELDS if FIELD_TYPES[name] is not bool)


def whole_numbers_up_to(limit: int) -> str:
    """A regular expression matching exactly the whole numbers 1 ... limit, without leading zeros."""
    digits = str(limit)
    width = len(digits)
    parts = [f"[1-9][0-9]{{0,{width - 2}}}"] if width > 1 else []
    for index, digit in enumerate(digits):
        lowest = 1 if index == 0 else 0
        if int(digit) - 1 >= lowest:
            rest = width - index - 1
            parts.append(digits[:index] + f"[{lowest}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(digits)
    return "|".join(parts)


# Every duration the API accepts, and nothing else: above zero, at most 30 days, no leading zeros. The
# OpenAPI description publishes this very pattern.
DURATION_PATTERN = (
    "^(?:"
    + "|".join(
        f"(?:{whole_numbers_up_to(int(MAX_DURATION_S / seconds))}){unit}"
        for unit, seconds in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))
    )
    + ")$"
)
_DURATION = re.compile(DURATION_PATTERN)


class BadParameter(RtdsError):
    """A request parameter the API cannot use. `parameter` names it; the message says how to fix it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    device_id: str
    duration_s: float
    fields: tuple[str, ...]
    every_s: float | None


def shown(value: str) -> str:
    """A client's value, shortened and quoted, safe to put in an error message."""
    return repr(value[:_SHOWN_CHARS] + ("…" if len(value) > _SHOWN_CHARS else ""))


def check_device_id(text: str) -> str:
    if not is_valid_device_id(text):
        raise BadParameter(
            "device_id",
            f"device id {shown(text)} is not valid; use 1-64 letters, digits, '_', '.' or '-' "
            f"(pattern {DEVICE_ID_PATTERN.pattern}), e.g. vehicle_01",
        )
    return text


def check_duration(text: str, parameter: str = "duration") -> float:
    """A positive duration of at most 30 days, in seconds: exactly what DURATION_PATTERN matches."""
    if _DURATION.fullmatch(text):
        return parse_duration_s(text)
    syntax = _DURATION_SYNTAX.fullmatch(text)
    if syntax is None:
        raise BadParameter(
            parameter, f"{parameter}={shown(text)} is not a duration; use a number and a unit, e.g. 30s, 5m, 1h, 7d"
        )
    if int(syntax.group(1)) == 0:
        raise BadParameter(parameter, f"{parameter}={shown(text)} must be above zero, e.g. 30s or 5m")
    if syntax.group(1).startswith("0"):
        raise BadParameter(
            parameter, f"{parameter}={shown(text)} has a leading zero; write {int(syntax.group(1))}{syntax.group(2)}"
        )
    raise BadParameter(parameter, f"{parameter}={shown(text)} is longer than the 30-day maximum; use 30d or less")


def check_fields(values: Iterable[str]) -> tuple[str, ...]:
    """Field names from `fields=a,b` (or repeated `fields=`), in order, without duplicates; speed when absent."""
    chosen: list[str] = []
    for value in values:
        for name in value.split(","):
            if not name:
                raise BadParameter(
                    "fields",
                    f"fields names an empty field; give one or more of: {', '.join(HISTORY_FIELDS)} "
                    "(comma-separated), or leave fields out for speed",
                )
            if name not in HISTORY_FIELDS:
                why = (
                    "is true/false and has no history; read it from /api/devices/<id>/latest"
                    if name in STORED_FIELDS
                    else "does not exist"
                )
                raise BadParameter("fields", f"field {shown(name)} {why}; choose from: {', '.join(HISTORY_FIELDS)}")
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen) or DEFAULT_HISTORY_FIELDS


def check_only(arguments: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse parameters the endpoint does not know, rather than ignoring a typo silently."""
    allowed = tuple(allowed)
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        accepted = f"it accepts {', '.join(allowed)}" if allowed else "it takes no parameters"
        raise BadParameter(unknown[0], f"unknown parameter {shown(unknown[0])}; {accepted}")


def history_query(device_id: str, arguments: Mapping[str, list[str]]) -> HistoryQuery:
    """The checked form of GET /api/devices/<device_id>/history?duration=&fields=&every=."""
    check_only(arguments, HISTORY_PARAMETERS)
    check_device_id(device_id)
    duration_text = _single(arguments, "duration")
    duration_s = check_duration(DEFAULT_HISTORY_DURATION if duration_text is None else duration_text)
    fields = check_fields(arguments.get("fields", []))
    every_text = _single(arguments, "every")
    every_s: float | None = None
    if every_text is not None:
        every_s = min(check_duration(every_text, "every"), duration_s)  # longer than duration: one window
    elif duration_s > RAW_HISTORY_MAX_S:
        every_s = duration_s / AVERAGED_POINTS
    return HistoryQuery(device_id, duration_s, fields, every_s)


def _single(arguments: Mapping[str, list[str]], name: str) -> str | None:
    values = arguments.get(name, [])
    if len(values) > 1:
        raise BadParameter(name, f"{name} was given {len(values)} times; give it once")
    return values[0] if values else None
