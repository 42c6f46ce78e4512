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

# Stricter than parse_duration_s alone: no spaces, no newlines, no more than 9 digits.
_DURATION_TEXT = re.compile(r"[0-9]{1,9}(?:ms|s|m|h|d)")
_SHOWN_CHARS = 60


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
    """A positive duration of at most 30 days, in seconds."""
    if not _DURATION_TEXT.fullmatch(text):
        raise BadParameter(
            parameter, f"{parameter}={shown(text)} is not a duration; use a number and a unit, e.g. 30s, 5m, 1h, 7d"
        )
    seconds = parse_duration_s(text)
    if seconds <= 0:
        raise BadParameter(parameter, f"{parameter}={shown(text)} must be above zero, e.g. 30s or 5m")
    if seconds > MAX_DURATION_S:
        raise BadParameter(parameter, f"{parameter}={shown(text)} is longer than the 30-day maximum; use 30d or less")
    return seconds


def check_fields(values: Iterable[str]) -> tuple[str, ...]:
    """Field names from `fields=a,b` (or repeated `fields=`), in order, without duplicates."""
    chosen: list[str] = []
    for value in values:
        for name in value.split(","):
            if name not in STORED_FIELDS:
                raise BadParameter(
                    "fields", f"field {shown(name)} does not exist; choose from: {', '.join(STORED_FIELDS)}"
                )
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
        every_s = check_duration(every_text, "every")
        if every_s > duration_s:
            raise BadParameter("every", f"every={shown(every_text)} is longer than duration; make it shorter")
    elif duration_s > RAW_HISTORY_MAX_S:
        every_s = duration_s / AVERAGED_POINTS
    if every_s is not None:
        flags = [name for name in fields if FIELD_TYPES[name] is bool]
        if flags:
            raise BadParameter(
                "fields",
                f"{', '.join(flags)} is true/false and cannot be averaged per window; leave it out, "
                f"or ask for at most {RAW_HISTORY_MAX_S / 3600:g} h without every=",
            )
    return HistoryQuery(device_id, duration_s, fields, every_s)


def _single(arguments: Mapping[str, list[str]], name: str) -> str | None:
    values = arguments.get(name, [])
    if len(values) > 1:
        raise BadParameter(name, f"{name} was given {len(values)} times; give it once")
    return values[0] if values else None
