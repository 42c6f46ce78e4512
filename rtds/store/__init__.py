"""The store interface: what the collector writes through and what the dashboard and monitoring read.

Adapters live beside this module (`sqlite.py`, `influxdb.py`) and are chosen by `STORE=` through
`STORES`. Batching, retries, acking and counters belong to the collector, not to adapters: an
adapter writes one batch and raises a `StoreError` subclass that says whether to retry.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from rtds.errors import ConfigError
from rtds.schema import TelemetryRecord
from rtds.settings import STORE_NAMES, Settings

# name -> "module:Class", imported on demand so SQLite users never import influxdb-client.
STORES: dict[str, str] = {
    "sqlite": "rtds.store.sqlite:SQLiteStore",
    "influxdb": "rtds.store.influxdb:InfluxStore",
}


class LatencySample(NamedTuple):
    """The timing of one stored point. All times are Unix seconds."""

    device_id: str
    time: float
    seq: int | None
    publish_timestamp: float
    collector_receive_time: float | None
    write_time: float | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class StoreHealth:
    ok: bool
    backend: str
    detail: str
    url: str | None = None
    primary_url: str | None = None
    fallback_url: str | None = None
    using_fallback: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backend": self.backend,
            "detail": self.detail,
            "url": self.url,
            "primary_url": self.primary_url,
            "fallback_url": self.fallback_url,
            "using_fallback": self.using_fallback,
            **self.extra,
        }


@runtime_checkable
class StoreWriter(Protocol):
    """What the collector needs."""

    def write(self, records: Sequence[TelemetryRecord], *, collector: str, write_time: float) -> None:
        """Store the batch durably, or raise StoreUnavailable / StoreRejected / StoreMisconfigured.

        Writing a point whose (device_id, time) is already stored replaces it.
        """
        ...

    def ready(self) -> bool:
        """While writes fail: whether the store answers again, asked more cheaply than a write. Never raises.

        An adapter with nothing cheaper than the write itself answers True, and the next write is the probe.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class StoreReader(Protocol):
    """What the dashboard and the monitoring tools need. Rows are dicts of tag and field names plus `time`."""

    def latest(self, device_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The newest stored point of each device (or of the given devices), all fields."""
        ...

    def history(
        self, device_id: str, since: float, fields: Sequence[str] = ("speed",), every_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Points of one device from `since` on, oldest first; averaged per `every_s` window when given."""
        ...

    def last_seen(self) -> dict[str, float]:
        """device_id -> time of its newest stored point."""
        ...

    def latency_samples(
        self, since: float, until: float | None = None, *, limit: int = 100_000, device_id: str | None = None
    ) -> list[LatencySample]:
        """Timings of points whose device time is in [since, until), oldest first, at most `limit`."""
        ...

    def health(self) -> StoreHealth: ...

    def close(self) -> None: ...


class Store(StoreWriter, StoreReader, Protocol):
    """An adapter implements both sides."""


def open_store(settings: Settings) -> Store:
    """The adapter named by STORE=, opened with the settings."""
    target = STORES.get(settings.store)
    if target is None:
        raise ConfigError(f"STORE={settings.store!r} is not a store; use {' or '.join(STORE_NAMES)}")
    module_name, class_name = target.split(":")
    store_class = getattr(importlib.import_module(module_name), class_name)
    return store_class.from_settings(settings)
