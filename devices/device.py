"""One simulated vehicle: readings -> durable queue -> MQTT, in seq order, deleted only on PUBACK.

The offline queue is the only path to the broker. Each generated message is inserted first
(with its seq, in one transaction), and the device publishes queued rows oldest first while
it is connected, keeping at most `window` messages published and not yet acknowledged. A row
is deleted when its PUBACK arrives (`on_publish`). All SQLite work runs in the driver thread
(`DeviceLoop`); paho's callbacks only record events, so the network thread never waits on disk.

Why nothing is lost, duplicated by us, or reordered (paho-mqtt 2.x, MQTT 3.1.1, clean_session=False):
- We never publish while disconnected: paho would keep such a message in memory and send it
  later, and a second copy from the queue would be a duplicate.
- paho keeps every unacknowledged QoS 1 message of a client (`_out_messages`) across reconnects
  and resends it itself, with the same mid, in publish order, whatever the broker's
  session_present says (`_messages_reconnect_reset_out` never drops QoS 1 messages; a broker
  that lost the session takes them as new publishes). So once a row is handed to paho it is
  never published again by this process; its PUBACK arrives after paho's resend.
- Ordering after a reconnect: paho calls `on_connect` *before* it resends its in-flight
  messages. A new publish in between would overtake them. So each publish records the
  connection epoch, and rows are published only while every message in flight belongs to the
  current epoch; after a reconnect the device waits until paho's resends are acknowledged.
  The check and the publish happen under `_link_lock`, which `on_connect` also takes to start
  a new epoch, so a publish cannot slip between a reconnect and paho's resend.
- Lock order: the driver holds `_link_lock` while `publish()` takes paho's `_out_message_mutex`.
  paho may call `on_publish` and `on_disconnect` while holding that mutex, so those two
  callbacks never take `_link_lock` (they append to a deque and flip a flag). `on_connect` is
  called before paho takes the mutex, so it may take `_link_lock`.
- A process killed by `kill -9` loses paho's memory but not the queue: on restart every row
  still present is sent again from the oldest. The broker may already have some of them, so
  delivery is at least once; the collector's writes are idempotent on (device_id, time).

`replayed` (README, "The data") marks a message that waited in the queue for a connection, so
that latency statistics report it apart from live ones:
- generated while a connection this process had was lost: known when it is generated;
- generated before this process's first connection, when that connection came more than
  FIRST_CONNECT_GRACE_S after the first reading (a start with the broker away, not the moments
  every start takes to connect): known when the first connection comes;
- still queued from an earlier run of the device (after a kill -9, or a stop with a backlog).
The last two are set on the payload as the row is handed to the client, so paho's resends and
the broker carry the flag too. A message is never marked for waiting behind a slow broker on a
live connection: that is latency, and the statistics should show it.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from devices.offline_queue import DeviceStats, OfflineQueue
from devices.onboard_computer import OnboardComputerSimulator
from devices.physics import DetectionLabelSimulator, VehicleSpeedSimulator
from devices.telemetry import DeviceTelemetry
from rtds import mqtt
from rtds.logs import RateLimitedLog
from rtds.schema import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    TelemetryRecord,
    data_topic,
    encode_payload,
    legacy_topic,
    mark_replayed,
    status_topic,
)
from rtds.settings import Settings

log = logging.getLogger(__name__)
_events = RateLimitedLog(log, interval_s=10.0)

PUBLISH_WINDOW = 20  # messages published and not yet acknowledged, per device
_PAHO_INFLIGHT = PUBLISH_WINDOW + 2  # room for the retained status messages
_ACCEPTED = (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)  # NO_CONN: paho keeps it and sends it on reconnect
FIRST_CONNECT_GRACE_S = 5.0  # a first connection within this of the first reading: its backlog is live, not replayed


class DeviceSimulator:
    """One vehicle. `DeviceLoop` calls `generate` on schedule and `pump` when something happened."""

    def __init__(
        self,
        device_id: str,
        settings: Settings,
        queue: OfflineQueue,
        *,
        telemetry: DeviceTelemetry | None,
        rng: random.Random | None = None,
        window: int = PUBLISH_WINDOW,
    ) -> None:
        self.device_id = device_id
        self.settings = settings
        self.queue = queue
        # The host's readings, or (None) this vehicle's own computer, seeded by its id: the same hardware every start.
        self.system: DeviceTelemetry | OnboardComputerSimulator = (
            telemetry if telemetry is not None else OnboardComputerSimulator(random.Random(f"onboard:{device_id}"))
        )
        rng = rng or random.Random()
        self.speed = VehicleSpeedSimulator(rng)
        self.detection = DetectionLabelSimulator(rng)
        self.window = max(1, window)
        self.topics = (
            (data_topic(device_id), legacy_topic(device_id))
            if settings.device_topics == "both"
            else (data_topic(device_id),)
        )
        self.notify: Callable[[DeviceSimulator], None] = lambda device: None
        self.stats: DeviceStats = queue.database.load_stats(device_id)
        self.stats.state = "connecting"
        self.stats.pid = os.getpid()

        self._link_lock = threading.Lock()
        self._connected = False
        self._ever_connected = False
        self._stopping = False
        self._epoch = 0
        self._first_reading_at: float | None = None  # monotonic
        self._first_connect_late = False
        self._run_first_seq = queue.next_seq  # rows below it were queued by an earlier run
        self._before_first_connect_through = -1  # the last seq generated before this process's first connection
        self._acks: collections.deque[tuple[int, bool]] = collections.deque()  # (mid, failed), from paho
        self._in_flight: dict[int, tuple[int, int]] = {}  # mid -> (seq, epoch), oldest first
        self._mids_left: dict[int, int] = {}  # seq -> mids not yet acked (2 when DEVICE_TOPICS=both)
        self._offline_status: paho.MQTTMessageInfo | None = None
        self._evicted_before = self.stats.evicted
        self.client = mqtt.make_client(
            settings,
            f"device_{device_id}",
            clean_session=False,
            max_inflight=_PAHO_INFLIGHT,
            will=(status_topic(device_id), STATUS_OFFLINE.encode()),
        )
        self.client.suppress_exceptions = True
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # -- called by the driver thread --------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def generate(self, now_s: float, dt_s: float) -> int:
        """Take one reading and append it to the queue; returns its seq."""
        speed = self.speed.step(dt_s)
        label, confidence = self.detection.step(dt_s)
        if isinstance(self.system, DeviceTelemetry):
            system = self.system.read()
        else:
            system = self.system.step(dt_s, speed_kmh=speed, detection_label=label)
        with self._link_lock:
            connected, ever_connected = self._connected, self._ever_connected
        if self._first_reading_at is None:
            self._first_reading_at = time.monotonic()
        replayed = ever_connected and not connected

        def build(seq: int) -> bytes:
            return encode_payload(
                TelemetryRecord(
                    device_id=self.device_id,
                    timestamp=now_s,
                    speed=round(speed, 2),
                    seq=seq,
                    cpu_usage=system.cpu_usage,
                    ram_usage=system.ram_usage,
                    memory_total=system.memory_total,
                    memory_used=system.memory_used,
                    memory_available=system.memory_available,
                    memory_percent=system.memory_percent,
                    disk_total=system.disk_total,
                    disk_used=system.disk_used,
                    disk_free=system.disk_free,
                    disk_percent=system.disk_percent,
                    network_bytes_sent=system.network_bytes_sent,
                    network_bytes_recv=system.network_bytes_recv,
                    detection_label=label,
                    detection_confidence=confidence,
                    replayed=replayed,
                )
            )

        seq = self.queue.append(build, now=now_s)
        if not ever_connected:
            self._before_first_connect_through = seq
        return seq

    def pump(self) -> None:
        """Delete acknowledged rows, then publish what the window allows."""
        acked: list[int] = []
        while self._acks:
            mid, failed = self._acks.popleft()
            entry = self._in_flight.pop(mid, None)
            if entry is None:
                continue  # a status message
            seq = entry[0]
            if failed:
                _events.warning(
                    "rejected", "%s: the broker refused seq %d; it is dropped from the queue", self.device_id, seq
                )
            left = self._mids_left.pop(seq, 1) - 1
            if left > 0:
                self._mids_left[seq] = left
            else:
                acked.append(seq)
        if acked:
            self.queue.remove(acked)
            self.stats.acked += len(acked)
        if not self._stopping:
            self._publish_window()

    def _publish_window(self) -> None:
        per_row = len(self.topics)
        room = (self.window - len(self._in_flight)) // per_row
        if room <= 0 or not self._connected:
            return
        rows = self.queue.peek_unsent(room)
        if not rows:
            return
        with self._link_lock:
            if not self._connected or self._stopping:
                return
            if self._in_flight and next(iter(self._in_flight.values()))[1] != self._epoch:
                return  # paho is resending messages from before the reconnect; let them go first
            for seq, payload in rows:
                if self._sent_late(seq):
                    payload = mark_replayed(payload)
                for topic in self.topics:
                    info = self.client.publish(topic, payload, qos=1)
                    if info.rc not in _ACCEPTED:
                        _events.warning(
                            "publish",
                            "%s: the MQTT client refused seq %d (%s); will retry",
                            self.device_id,
                            seq,
                            info.rc,
                        )
                        return
                    self._in_flight[info.mid] = (seq, self._epoch)
                self._mids_left[seq] = per_row
                self.queue.mark_sent(seq)
                self.stats.sent += 1

    def _sent_late(self, seq: int) -> bool:
        """Queued by an earlier run, or generated before a first connection that came late."""
        if seq < self._run_first_seq:
            return True
        return self._first_connect_late and seq <= self._before_first_connect_through

    def begin_stop(self) -> None:
        """Stop publishing data, announce `offline` (retained) if connected."""
        with self._link_lock:
            self._stopping = True
            connected = self._connected
        if connected:
            self._offline_status = self.client.publish(
                status_topic(self.device_id), STATUS_OFFLINE.encode(), qos=1, retain=True
            )

    def stop_complete(self) -> bool:
        """True when nothing published by this process waits for a PUBACK any more (or we are offline)."""
        if not self._connected:
            return True
        return not self._in_flight and (self._offline_status is None or self._offline_status.is_published())

    def snapshot(self) -> DeviceStats:
        stats = self.stats
        stats.queued = self.queue.size
        stats.evicted = self._evicted_before + self.queue.evicted
        stats.next_seq = self.queue.next_seq
        stats.generated = self.queue.next_seq  # exact across restarts, unlike the counters saved each second
        if self._stopping and not self._connected:
            stats.state = "stopped"
        stats.updated_at = time.time()
        return DeviceStats(**{name: getattr(stats, name) for name in stats.__dataclass_fields__})

    # -- paho callbacks (network thread): record and notify, nothing else -------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.state = "refused"
            _events.warning(
                "refused",
                "%s: the broker refused the connection: %s; retrying",
                self.device_id,
                mqtt.explain_connect_failure(reason_code),
            )
            return
        mqtt.set_nodelay(client)  # small QoS 1 packets would otherwise wait on Nagle and delayed ACKs
        with self._link_lock:
            self._epoch += 1
            self._connected = True
            reconnected = self._ever_connected
            if not reconnected and self._first_reading_at is not None:
                self._first_connect_late = time.monotonic() - self._first_reading_at > FIRST_CONNECT_GRACE_S
            self._ever_connected = True
        if reconnected:
            self.stats.reconnects += 1
            _events.warning(
                "reconnected", "%s: reconnected to the broker; flushing %d queued", self.device_id, self.queue.size
            )
        self.stats.state = "online"
        client.publish(status_topic(self.device_id), STATUS_ONLINE.encode(), qos=1, retain=True)
        self.notify(self)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        settings = self.settings
        broker = (client.host, client.port)
        reason = f"cannot reach the broker at {broker[0]}:{broker[1]} (check MQTT_BROKER_HOST / MQTT_BROKER_PORT)"
        if _events.would_log("connect_fail"):  # at most one probe per log line, whatever the fleet's size
            reason = mqtt.diagnose_connection(settings, broker) or reason
        _events.warning("connect_fail", "%s: %s; queueing and retrying with backoff", self.device_id, reason)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected = False  # no lock: see the module docstring
        if not self._stopping:
            self.stats.state = "offline"
            _events.warning(
                "disconnected", "%s: lost the broker (%s); queueing until it is back", self.device_id, reason_code
            )
        self.notify(self)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.append((mid, bool(getattr(reason_code, "is_failure", False))))
        self.notify(self)
