"""Which vehicles are online: data age in the store, corrected at once by retained presence messages.

Devices publish a retained `online` on `device/status/{id}` and leave `offline` as their Last Will,
so a vehicle that dies or stops is marked offline as soon as the broker says so, without waiting
for its data to age past DASHBOARD_OFFLINE_AFTER_S. Data newer than the `offline` message (the
device came back) makes it online again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho

from rtds import mqtt
from rtds.logs import RateLimitedLog
from rtds.schema import STATUS_OFFLINE, STATUS_ONLINE, STATUS_SUBSCRIPTION, device_id_from_topic, is_valid_device_id
from rtds.settings import Settings

log = logging.getLogger(__name__)

# Anonymous clients can publish statuses for made-up ids; keep memory bounded.
MAX_TRACKED_DEVICES = 100_000


@dataclass(frozen=True, slots=True)
class Presence:
    status: str  # "online" or "offline"
    received_at: float  # server clock, Unix seconds


@dataclass(frozen=True, slots=True)
class DeviceState:
    online: bool
    last_seen: float | None
    seconds_since: float | None
    reason: str  # "data", "stale", "status_offline", "no_data"

    def as_dict(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "status": "online" if self.online else "offline",
            "last_seen": self.last_seen,
            "seconds_since": None if self.seconds_since is None else round(self.seconds_since, 3),
            "reason": self.reason,
        }


def device_state(last_seen: float | None, presence: Presence | None, now: float, offline_after_s: float) -> DeviceState:
    """Online when the newest data is recent and no `offline` status arrived after it."""
    if last_seen is None:
        return DeviceState(False, None, None, "no_data")
    seconds_since = max(0.0, now - last_seen)
    if presence is not None and presence.status == STATUS_OFFLINE and presence.received_at >= last_seen:
        return DeviceState(False, last_seen, seconds_since, "status_offline")
    if seconds_since > offline_after_s:
        return DeviceState(False, last_seen, seconds_since, "stale")
    return DeviceState(True, last_seen, seconds_since, "data")


def parse_status(payload: bytes) -> str | None:
    """`online`/`offline` as plain text or as a JSON object with a "status" key; None otherwise."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        text = str(document.get("status", "")) if isinstance(document, dict) else ""
    text = text.strip().lower()
    return text if text in (STATUS_ONLINE, STATUS_OFFLINE) else None


class PresenceTracker:
    """An MQTT subscriber to `device/status/+` that remembers each device's last status."""

    def __init__(self, settings: Settings, *, clock: Any = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._statuses: dict[str, Presence] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._detail = "not started"
        self._warn = RateLimitedLog(log, 30.0)
        client_id = f"rtds-dashboard-{socket.gethostname()}-{os.getpid()}-{id(self):x}"[:64]
        # A clean session: statuses are retained, so a fresh subscription receives them all again.
        self._client = mqtt.make_client(settings, client_id, clean_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.suppress_exceptions = True
        self._started = False

    @property
    def broker(self) -> str:
        """The broker node in use (or tried next), as host:port."""
        if self._client.host:
            return f"{self._client.host}:{self._client.port}"
        host, port = self._settings.mqtt_brokers[0]
        return f"{host}:{port}"

    def start(self) -> PresenceTracker:
        self._detail = f"connecting to {self.broker}"
        mqtt.start(self._client, self._settings)
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            mqtt.stop(self._client)
        self._connected.clear()

    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def health(self) -> dict[str, Any]:
        with self._lock:
            tracked = len(self._statuses)
        return {
            "ok": self.connected(),
            "broker": self.broker,
            "detail": self._detail,
            "subscription": STATUS_SUBSCRIPTION,
            "devices_with_status": tracked,
        }

    def get(self, device_id: str) -> Presence | None:
        return self._statuses.get(device_id)

    def snapshot(self) -> dict[str, Presence]:
        with self._lock:
            return dict(self._statuses)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self._detail = f"broker {self.broker} refused the connection: {mqtt.explain_connect_failure(reason_code)}"
            self._warn.warning("connect", "presence subscriber: %s", self._detail)
            return
        client.subscribe(STATUS_SUBSCRIPTION, qos=1)
        self._detail = f"connected to {self.broker}, subscribed to {STATUS_SUBSCRIPTION}"
        self._connected.set()
        log.info("presence subscriber connected to %s", self.broker)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._detail = f"cannot reach the broker at {self.broker}; retrying (check MQTT_BROKER_HOST/MQTT_BROKER_PORT)"
        self._warn.warning("connect", "presence subscriber: %s", self._detail)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._detail = f"disconnected from {self.broker} ({reason_code}); reconnecting"
        if self._started:
            self._warn.warning("disconnect", "presence subscriber: %s", self._detail)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            device_id = device_id_from_topic(message.topic)
            status = parse_status(bytes(message.payload))
            if device_id is None or not is_valid_device_id(device_id) or status is None:
                log.debug("ignored status message on %r", message.topic)
                return
            with self._lock:
                if device_id not in self._statuses and len(self._statuses) >= MAX_TRACKED_DEVICES:
                    self._warn.warning(
                        "full", "presence subscriber tracks %d devices; ignoring new ids", len(self._statuses)
                    )
                    return
                self._statuses[device_id] = Presence(status, self._clock())
        except Exception:
            log.exception("presence subscriber could not handle a message on %r", message.topic)
