"""Records as InfluxDB line protocol: the points the InfluxDB adapter writes.

One point per record: measurement `device_data`, tags `collector`, `detection_label` (only when
the record has one: tag values cannot be empty) and `device_id`, the fields of `FIELD_TYPES`
that the record has, and the device's own timestamp in microseconds. Measurement + tags + time
is a point's identity in InfluxDB, so a redelivered message replaces its point, as in SQLite.

Escaping follows InfluxDB's parser (models/points.go): in tag keys and values a backslash escapes
only a comma, an equals sign or a space, so a backslash cannot itself be escaped and a tag value
ending in one cannot be written at all. Such values are refused rather than silently changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rtds.schema import FIELD_TYPES, MEASUREMENT, TelemetryRecord

PRECISION = "us"
_UNITS_PER_SECOND = 1_000_000
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})


class UnwritableRecord(ValueError):
    """A record that line protocol cannot carry unchanged (a tag with a backslash or a newline)."""


def timestamp_units(seconds: float) -> int:
    """Unix seconds -> the integer timestamp written at PRECISION (microseconds)."""
    return round(seconds * _UNITS_PER_SECOND)


def escape_tag(text: str) -> str:
    if not text:
        raise UnwritableRecord("tag values cannot be empty")
    if "\\" in text or "\n" in text or "\r" in text:
        raise UnwritableRecord(
            f"tag value {text!r} contains a backslash or a line break, which line protocol cannot carry"
        )
    return text.translate(_TAG_ESCAPES)


def format_field(name: str, value: float | int | bool) -> str:
    kind = FIELD_TYPES[name]
    if kind is bool:
        return f"{name}={'true' if value else 'false'}"
    if kind is int:
        return f"{name}={int(value)}i"
    number = float(value)
    if not math.isfinite(number):
        raise UnwritableRecord(f"field {name} is {number}; InfluxDB stores only finite numbers")
    # repr() is the shortest text that reads back as the same float; "5.0" stays a float.
    return f"{name}={number!r}"


def field_values(record: TelemetryRecord, write_time: float) -> dict[str, float | int | bool]:
    """The stored fields of one record, as SQLite stores them; absent values are left out."""
    values: dict[str, float | int | bool | None] = {name: getattr(record, name, None) for name in FIELD_TYPES}
    values["replayed"] = bool(record.replayed)
    values["publish_timestamp"] = record.timestamp
    values["write_time"] = write_time
    return {name: value for name, value in values.items() if value is not None}


def encode_point(record: TelemetryRecord, *, collector: str, write_time: float) -> str:
    tags = {"collector": collector, "detection_label": record.detection_label, "device_id": record.device_id}
    tag_text = ",".join(f"{key}={escape_tag(value)}" for key, value in sorted(tags.items()) if value is not None)
    fields = field_values(record, write_time)
    field_text = ",".join(format_field(name, value) for name, value in fields.items())
    return f"{MEASUREMENT.translate(_MEASUREMENT_ESCAPES)},{tag_text} {field_text} {timestamp_units(record.timestamp)}"


def encode_batch(records: Sequence[TelemetryRecord], *, collector: str, write_time: float) -> bytes:
    """The body of one write request. Raises UnwritableRecord naming the first record it cannot carry."""
    lines = []
    for record in records:
        try:
            lines.append(encode_point(record, collector=collector, write_time=write_time))
        except UnwritableRecord as exc:
            raise UnwritableRecord(f"device {record.device_id} at {record.timestamp}: {exc}") from None
    return "\n".join(lines).encode("utf-8")
