"""The live feed: one background task that reads the store once per tick and pushes `latest_data`.

Whatever the number of browsers, each tick makes one `store.latest()` call, builds one payload and
emits it once to every connected client (python-socketio encodes a broadcast once and reuses the
bytes). A second task refreshes the fleet summary every SUMMARY_REFRESH_S (dashboard.fleet), so its
larger read never delays a tick; each payload carries the latest figures. A client that connects between ticks gets the last payload at once; if the feed was idle
(no clients) it is refreshed first, under a lock, so a crowd connecting together costs one query.

With DASHBOARD_MESSAGE_QUEUE, the processes of a group share this work (dashboard.group): only the
leader reads the store and emits, the message queue brings its payloads to every process's clients,
and a process that does not lead gives a newly connected client the leader's last payload.

Payload of `latest_data`:
    {"tick": 42, "time": <server Unix s>, "interval_s": 1.0, "offline_after_s": 10.0,
     "store": {"ok": true, "detail": ""},
     "summary": {"devices": 10, "online": 9, "window_s": 60, "messages": 600, "messages_per_s": 10.0,
                 "latency_p50_ms": 512.3, "latency_p95_ms": 880.1, "latency_samples": 600},
     "devices": [{"device_id": "vehicle_01", "time": ..., "seq": ..., "speed": ..., "cpu_usage": ...,
                  "ram_usage": ..., "disk_percent": ..., "detection_label": ...,
                  "detection_confidence": ..., "online": true, "seconds_since": 0.4}, ...]}
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from dashboard.fleet import FleetSummary
from dashboard.group import FeedGroup
from dashboard.presence import PresenceTracker, device_state
from rtds.logs import RateLimitedLog
from rtds.settings import Settings
from rtds.store import StoreReader

log = logging.getLogger(__name__)

# The record fields the page shows; the REST API has all of them.
LIVE_FIELDS = (
    "seq",
    "speed",
    "cpu_usage",
    "ram_usage",
    "disk_percent",
    "detection_label",
    "detection_confidence",
)
SUMMARY_REFRESH_S = 5.0
STATS_WINDOW_TICKS = 120


class OrjsonCodec:
    """The json module interface python-socketio takes (`dumps`/`loads`), backed by orjson.

    One 1,000-device tick is 218 KB of JSON; the standard library's json spends several times longer
    encoding it, on the thread that emits the tick.
    """

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


def _rounded(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


class LiveFeed:
    """Builds `latest_data` payloads and emits them from one background task."""

    def __init__(
        self,
        store: StoreReader,
        presence: PresenceTracker | None,
        settings: Settings,
        emit: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.time,
        summary_refresh_s: float = SUMMARY_REFRESH_S,
        group: FeedGroup | None = None,
    ) -> None:
        self._store = store
        self._group = group
        self._ticking = False
        self._presence = presence
        self._emit = emit
        self._clock = clock
        self.interval_s = settings.dashboard_push_interval_s
        self.offline_after_s = settings.dashboard_offline_after_s
        self._summary = FleetSummary()
        self._summary_refresh_s = summary_refresh_s
        self._summary_at = float("-inf")
        self._refresh_lock = threading.Lock()
        self._clients_lock = threading.Lock()
        self._clients = 0
        self._stopping = threading.Event()
        self._task: Any = None
        self._summary_task: Any = None
        self._warn = RateLimitedLog(log, 30.0)
        self._last_rows: list[dict[str, Any]] = []
        self.snapshot: dict[str, Any] | None = None
        self._snapshot_at = float("-inf")
        # Counters for /api/health and the run summary.
        self.loops = 0
        self.ticks = 0
        self.emits = 0
        self.skipped_ticks = 0
        self.store_errors = 0
        self.peak_clients = 0
        self.connections = 0
        self.last_refresh_ms = 0.0
        self.max_refresh_ms = 0.0
        # How late each recent tick started against its schedule, and how long its emit took (ms).
        self._lateness_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW_TICKS)
        self._emit_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW_TICKS)

    # --- clients -------------------------------------------------------------------------

    @property
    def clients(self) -> int:
        return self._clients

    def client_connected(self) -> dict[str, Any]:
        """Count the client and return the payload it should get at once."""
        with self._clients_lock:
            self._clients += 1
            self.connections += 1
            self.peak_clients = max(self.peak_clients, self._clients)
        if self._group is not None and not self._group.leading:
            shared = self._shared_payload(max_age_s=self.interval_s)
            if shared is not None:
                return shared
        return self.refresh(max_age_s=self.interval_s)

    def client_disconnected(self) -> None:
        with self._clients_lock:
            self._clients = max(0, self._clients - 1)

    # --- building payloads ---------------------------------------------------------------

    def refresh(self, max_age_s: float = 0.0) -> dict[str, Any]:
        """Query the store once and build the payload (or reuse one younger than `max_age_s`)."""
        with self._refresh_lock:
            if self.snapshot is not None and time.monotonic() - self._snapshot_at < max_age_s:
                return self.snapshot
            started = time.monotonic()
            now = self._clock()
            store_status = {"ok": True, "detail": ""}
            try:
                self._last_rows = self._store.latest()
            except Exception as exc:
                self.store_errors += 1
                store_status = {"ok": False, "detail": f"the store could not be read: {type(exc).__name__}"}
                self._warn.warning("store", "live feed: reading the store failed: %s", exc)
            payload = self._payload(self._last_rows, now, store_status)
            self.snapshot = payload
            self._snapshot_at = time.monotonic()
            self.last_refresh_ms = (self._snapshot_at - started) * 1000.0
            self.max_refresh_ms = max(self.max_refresh_ms, self.last_refresh_ms)
            return payload

    def _shared_payload(self, max_age_s: float) -> dict[str, Any] | None:
        """The group leader's last payload (kept for `max_age_s`, so a crowd connecting together costs one GET)."""
        with self._refresh_lock:
            if self.snapshot is not None and time.monotonic() - self._snapshot_at < max_age_s:
                return self.snapshot
            assert self._group is not None
            shared = self._group.last_payload()
            if shared is not None:
                self.snapshot = shared
                self._snapshot_at = time.monotonic()
            return shared

    def _payload(self, rows: list[dict[str, Any]], now: float, store_status: dict[str, Any]) -> dict[str, Any]:
        statuses = self._presence.snapshot() if self._presence is not None else {}
        devices = []
        online = 0
        for row in rows:
            device_id = row["device_id"]
            state = device_state(row.get("time"), statuses.get(device_id), now, self.offline_after_s)
            online += state.online
            seen = row.get("time")
            entry = {"device_id": device_id, "time": None if seen is None else round(seen, 3)}
            for name in LIVE_FIELDS:
                entry[name] = _rounded(row.get(name))
            entry["online"] = state.online
            entry["seconds_since"] = None if state.seconds_since is None else round(state.seconds_since, 1)
            devices.append(entry)
        self.ticks += 1
        return {
            "tick": self.ticks if self._group is None else self._group.next_tick(fallback=self.ticks),
            "time": now,
            "interval_s": self.interval_s,
            "offline_after_s": self.offline_after_s,
            "store": store_status,
            "summary": {"devices": len(devices), "online": online, **self._summary.figures.as_dict()},
            "devices": devices,
        }

    # --- the background task -------------------------------------------------------------

    def start(self, start_task: Callable[..., Any], sleep: Callable[[float], Any]) -> None:
        """Run the loops with the server's own task and sleep functions (socketio.start_background_task/sleep)."""
        self._sleep = sleep
        self._task = start_task(self._run)
        self._summary_task = start_task(self._run_summary)

    def _run_summary(self) -> None:
        """Refreshes the fleet summary off the tick's path, so its bigger read never delays an emit."""
        while not self._stopping.is_set():
            now = self._clock()
            if self._ticking and now - self._summary_at >= self._summary_refresh_s:
                self._summary_at = now
                try:
                    self._summary.refresh(self._store, now)
                except Exception as exc:
                    self.store_errors += 1
                    self._warn.warning("summary", "live feed: reading latency samples failed: %s", exc)
            self._sleep(min(self.interval_s, self._summary_refresh_s))

    def stop(self) -> None:
        self._stopping.set()
        if self._group is not None:
            self._group.close()

    def _should_tick(self) -> bool:
        """Alone: while anyone is connected. In a group: when this process leads and anyone in the group watches."""
        if self._group is None:
            return self._clients > 0
        return self._group.should_tick(self._clients)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            self.loops += 1
            self._ticking = self._should_tick()
            if self._ticking:
                started = time.monotonic()
                self._lateness_ms.append(max(0.0, started - next_at) * 1000.0)
                try:
                    payload = self.refresh()
                    emitting = time.monotonic()
                    self._emit(payload)
                    self._emit_ms.append((time.monotonic() - emitting) * 1000.0)
                    self.emits += 1
                    if self._group is not None:
                        # After the emit: encoding and storing the copy for late joiners must not delay the tick.
                        self._group.share(payload)
                except Exception:
                    log.exception("live feed: a tick failed; the next one will try again")
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                missed = int(-delay // self.interval_s) + 1
                self.skipped_ticks += missed
                next_at += missed * self.interval_s
                delay = next_at - time.monotonic()
            self._sleep(delay)

    def stats(self) -> dict[str, Any]:
        return {
            "clients": self._clients,
            "peak_clients": self.peak_clients,
            "connections": self.connections,
            "ticks": self.ticks,
            "emits": self.emits,
            "skipped_ticks": self.skipped_ticks,
            "store_errors": self.store_errors,
            "interval_s": self.interval_s,
            "last_refresh_ms": round(self.last_refresh_ms, 2),
            "max_refresh_ms": round(self.max_refresh_ms, 2),
            "tick_lateness_p95_ms": _p95(self._lateness_ms),
            "emit_p95_ms": _p95(self._emit_ms),
            "group": None if self._group is None else self._group.stats(),
        }


def _p95(values: collections.deque[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2)
