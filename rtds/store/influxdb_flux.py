"""The Flux queries of the InfluxDB adapter: constant texts, values only through `params`.

Every value (bucket, device id, field name, times, durations, limits) reaches InfluxDB as a typed
literal in the request's `extern` block, which the Python client builds from `params`; the texts
below refer to them by bare name and are never formatted or concatenated. `PARAMETERS` lists the
names each query expects, so a test can check that nothing else is needed.

A device's points spread over several series (one per detection_label and collector), and
`group()` does not sort, so every "newest" query regroups by `device_id` and sorts by `_time`
before picking the last row.

Below the texts: the checks every value passes before it becomes a parameter, and the conversion of
result rows into the store interface's row shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rtds.schema import DEVICE_ID_PATTERN, FIELD_TYPES, STORED_FIELDS
from rtds.store.line_protocol import timestamp_units

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# range() needs a stop; now() would hide the points of devices whose clocks run ahead.
END_OF_TIME = datetime(2200, 1, 1, tzinfo=UTC)
END_OF_TIME_S = (END_OF_TIME - EPOCH).total_seconds()
MAX_WINDOW_S = 30 * 86_400
ROW_KEYS = ("device_id", "time", "collector", "detection_label", *STORED_FIELDS)

# The newest point of every device with all its fields: the newest value of each series and field
# (a storage push-down), fields turned into columns per series, then the newest row per device.
LATEST = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data")
  |> last()
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group(columns: ["device_id"])
  |> sort(columns: ["_time"])
  |> tail(n: 1)
"""

# The time of every device's newest point. Every point has `speed` (the payload requires it).
LAST_SEEN = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data" and r._field == "speed")
  |> last()
  |> group(columns: ["device_id"])
  |> sort(columns: ["_time"])
  |> tail(n: 1)
  |> keep(columns: ["device_id", "_time"])
"""

# One field of one device, oldest first, all series of the device merged.
HISTORY = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data" and r.device_id == _device and r._field == _field)
  |> group(columns: ["device_id", "_field"])
  |> sort(columns: ["_time"])
  |> keep(columns: ["_time", "_value"])
"""

# The same, averaged per window of `_every`; a window is stamped with its end, empty ones are skipped.
HISTORY_AGGREGATED = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data" and r.device_id == _device and r._field == _field)
  |> group(columns: ["device_id", "_field"])
  |> aggregateWindow(every: _every, fn: mean, createEmpty: false)
  |> sort(columns: ["_time"])
  |> keep(columns: ["_time", "_value"])
"""

# The timing fields of every point in [_start, _stop), oldest first, at most _limit rows.
LATENCY_SAMPLES = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data")
  |> filter(fn: (r) =>
      r._field == "seq" or r._field == "publish_timestamp" or r._field == "collector_receive_time"
      or r._field == "write_time" or r._field == "replayed")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
  |> sort(columns: ["_time", "device_id"])
  |> limit(n: _limit)
  |> keep(columns: ["_time", "device_id", "seq", "publish_timestamp", "collector_receive_time", "write_time", "replayed"])
"""

LATENCY_SAMPLES_OF_DEVICE = """\
from(bucket: _bucket)
  |> range(start: _start, stop: _stop)
  |> filter(fn: (r) => r._measurement == "device_data" and r.device_id == _device)
  |> filter(fn: (r) =>
      r._field == "seq" or r._field == "publish_timestamp" or r._field == "collector_receive_time"
      or r._field == "write_time" or r._field == "replayed")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
  |> sort(columns: ["_time", "device_id"])
  |> limit(n: _limit)
  |> keep(columns: ["_time", "device_id", "seq", "publish_timestamp", "collector_receive_time", "write_time", "replayed"])
"""

PARAMETERS: dict[str, frozenset[str]] = {
    LATEST: frozenset({"_bucket", "_start", "_stop"}),
    LAST_SEEN: frozenset({"_bucket", "_start", "_stop"}),
    HISTORY: frozenset({"_bucket", "_start", "_stop", "_device", "_field"}),
    HISTORY_AGGREGATED: frozenset({"_bucket", "_start", "_stop", "_device", "_field", "_every"}),
    LATENCY_SAMPLES: frozenset({"_bucket", "_start", "_stop", "_limit"}),
    LATENCY_SAMPLES_OF_DEVICE: frozenset({"_bucket", "_start", "_stop", "_limit", "_device"}),
}


# --- checks and conversions ---------------------------------------------------------------


def checked_device_id(device_id: object) -> str:
    if not isinstance(device_id, str) or DEVICE_ID_PATTERN.fullmatch(device_id) is None:
        raise ValueError(f"device id {str(device_id)[:80]!r} is not valid: use 1-64 letters, digits, '_', '.' or '-'")
    return device_id


def checked_fields(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in FIELD_TYPES]
    if unknown or not names:
        raise ValueError(
            f"unknown field(s) {[str(name)[:40] for name in unknown]}; choose from {', '.join(STORED_FIELDS)}"
        )
    return list(dict.fromkeys(names))


def checked_window(every_s: float) -> timedelta:
    """A positive averaging window of at most 30 days, as a Flux duration parameter."""
    if isinstance(every_s, bool) or not isinstance(every_s, int | float) or not 0.001 <= every_s <= MAX_WINDOW_S:
        raise ValueError(f"every_s={every_s!r} is not a window; use seconds from 0.001 to {MAX_WINDOW_S}")
    return timedelta(microseconds=timestamp_units(float(every_s)))


def time_param(seconds: float, name: str) -> datetime:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValueError(f"{name}={seconds!r} is not a time; use Unix seconds")
    clamped = min(max(float(seconds), 0.0), END_OF_TIME_S)
    return EPOCH + timedelta(microseconds=timestamp_units(clamped))


def seconds(moment: datetime) -> float:
    return (moment - EPOCH) // timedelta(microseconds=1) / 1_000_000


def typed(name: str, value: Any) -> Any:
    kind = FIELD_TYPES[name]
    if kind is bool:
        return bool(value)
    return None if value is None else kind(value)


def point_row(values: dict[str, Any]) -> dict[str, Any]:
    row = {key: None for key in ROW_KEYS}
    row["device_id"] = values["device_id"]
    row["time"] = seconds(values["_time"])
    row["collector"] = values.get("collector")
    row["detection_label"] = values.get("detection_label")
    for name in STORED_FIELDS:
        row[name] = typed(name, values.get(name))
    return row
