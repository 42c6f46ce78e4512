"""What the collector tests drive it with: QoS 1 device publishers that count only acknowledged messages,
a `mosquitto_pub` wrapper, and readers of the SQLite file the collector writes.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rtds.schema import MEASUREMENT, data_topic
from rtds.settings import Settings
from rtds.testkit import Received, ServiceProcess, puback_received, publish_all, wait_until

Key = tuple[str, int]  # (device_id, seq)
Spawn = Callable[..., ServiceProcess]
COLLECTOR_SCRIPT = "collector/mqtt_collector.py"


def reading(device_id: str, seq: int, timestamp: float, **extra: Any) -> dict[str, Any]:
    """A flat payload like the seed's, with every field set."""
    return {
        "device_id": device_id,
        "timestamp": timestamp,
        "seq": seq,
        "speed": 40.0 + seq % 50,
        "cpu_usage": 12.5,
        "ram_usage": 40.25,
        "memory_total": 8192.0,
        "memory_used": 3300.0,
        "memory_available": 4892.0,
        "memory_percent": 40.3,
        "disk_total": 500000.0,
        "disk_used": 250000.0,
        "disk_free": 250000.0,
        "disk_percent": 50.0,
        "network_bytes_sent": 1000.0 + seq,
        "network_bytes_recv": 2000.0 + seq,
        "detection_label": "car",
        "detection_confidence": 0.875,
        **extra,
    }


class DevicePublisher:
    """One simulated vehicle publishing seq 0, 1, 2 ... at QoS 1 from its own paho client.

    A message counts as sent only once the broker's PUBACK arrived (`info.is_published()`); paho keeps
    the others in memory and resends them after a reconnect. Timestamps are base_time + seq * interval_s,
    so every (device_id, seq) has its own time whatever the scheduling.
    """

    def __init__(self, host: str, port: int, device_id: str, *, base_time: float, interval_s: float) -> None:
        self.device_id = device_id
        self.base_time = base_time
        self.interval_s = interval_s
        self._infos: list[tuple[int, paho.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device_id}", clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def start(self) -> DevicePublisher:
        self._thread = threading.Thread(target=self._publish_until_stopped, name=f"publish-{self.device_id}")
        self._thread.start()
        return self

    def _publish_until_stopped(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.publish(seq)
            seq += 1
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def publish(self, seq: int) -> None:
        payload = orjson.dumps(reading(self.device_id, seq, self.base_time + seq * self.interval_s))
        self._infos.append((seq, self.client.publish(data_topic(self.device_id), payload, qos=1)))

    def stop_publishing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def published(self) -> int:
        return len(self._infos)

    def acked(self) -> set[Key]:
        return {(self.device_id, seq) for seq, info in list(self._infos) if puback_received(info)}

    def all_acked(self) -> bool:
        return all(puback_received(info) for _, info in list(self._infos))

    def close(self) -> None:
        self.stop_publishing()
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    """`count` DevicePublishers (vehicle_00 ...), each sending every `interval_s`."""

    def __init__(self, host: str, port: int, count: int = 10, *, interval_s: float = 0.05, prefix: str = "vehicle_"):
        base_time = time.time()
        self.devices = [
            DevicePublisher(host, port, f"{prefix}{index:02d}", base_time=base_time, interval_s=interval_s)
            for index in range(count)
        ]

    def start(self) -> Fleet:
        for device in self.devices:
            device.start()
        return self

    @property
    def published(self) -> int:
        return sum(device.published for device in self.devices)

    def stop_and_wait_for_acks(self, timeout_s: float = 30) -> set[Key]:
        for device in self.devices:
            device.stop_publishing()
        wait_until(lambda: all(device.all_acked() for device in self.devices), timeout_s, message="publisher PUBACKs")
        return self.acked()

    def acked(self) -> set[Key]:
        return set().union(*(device.acked() for device in self.devices))

    def close(self) -> None:
        for device in self.devices:
            device.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def publish_backlog(host: str, port: int, count: int, *, devices: int = 10, prefix: str = "backlog_") -> set[Key]:
    """Publish `count` readings at QoS 1 as fast as the broker acknowledges them; return the acked keys."""
    base_time = time.time()
    keys = [(f"{prefix}{index % devices:02d}", index // devices) for index in range(count)]
    publish_all(
        host,
        port,
        (
            (data_topic(device_id), orjson.dumps(reading(device_id, seq, base_time + seq * 0.001)))
            for device_id, seq in keys
        ),
        window=1000,
    )
    return set(keys)


def mosquitto_pub(port: int, topic: str, payload: bytes) -> None:
    """Publish one message at QoS 1 with the mosquitto_pub command, the payload read verbatim from stdin."""
    program = shutil.which("mosquitto_pub")
    assert program, "mosquitto_pub is not installed (apt-get install mosquitto-clients)"
    subprocess.run(
        [program, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-s"],
        input=payload,
        check=True,
        timeout=10,
        capture_output=True,
    )


def keys_seen(messages: Iterable[Received]) -> set[Key]:
    """(device_id, seq) of every reading a Witness saw."""
    keys = set()
    for message in messages:
        document = orjson.loads(message.payload)
        keys.add((document["device_id"], document["seq"]))
    return keys


# --- the SQLite file --------------------------------------------------------------------------


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Another connection holds the database's write lock, as a long transaction or a backup would."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _query(path: str | Path, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    if not Path(path).exists():
        return []
    connection = sqlite3.connect(path, timeout=10)
    try:
        return connection.execute(sql, tuple(parameters)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


def stored_keys(path: str | Path, like: str = "%") -> Counter[Key]:
    """How many rows each (device_id, seq) has."""
    rows = _query(path, f"SELECT device_id, seq FROM {MEASUREMENT} WHERE device_id LIKE ?", (like,))
    return Counter((device_id, seq) for device_id, seq in rows)


def stored_count(path: str | Path, like: str = "%") -> int:
    rows = _query(path, f"SELECT COUNT(*) FROM {MEASUREMENT} WHERE device_id LIKE ?", (like,))
    return rows[0][0] if rows else 0


def stored_rows(path: str | Path, device_id: str) -> list[dict[str, Any]]:
    connection = sqlite3.connect(path, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        return [
            dict(row) for row in connection.execute(f"SELECT * FROM {MEASUREMENT} WHERE device_id = ?", (device_id,))
        ]
    finally:
        connection.close()


def assert_exactly_once(path: str | Path, sent: set[Key], like: str = "%") -> None:
    stored = stored_keys(path, like)
    missing = sent - set(stored)
    duplicated = {key: n for key, n in stored.items() if n > 1}
    unexpected = set(stored) - sent
    assert not missing, f"{len(missing)} acknowledged messages missing, e.g. {sorted(missing)[:5]}"
    assert not duplicated, f"stored more than once: {sorted(duplicated.items())[:5]}"
    assert not unexpected, f"stored but never acknowledged to a publisher: {sorted(unexpected)[:5]}"


# --- the collector process --------------------------------------------------------------------


def collector_settings(settings: Settings, **overrides: Any) -> Settings:
    """Test settings: quick retries and summaries, everything else as shipped."""
    values: dict[str, Any] = {
        "collector_retry_interval_ms": 250,
        "collector_max_retry_delay_ms": 1_000,
        "collector_summary_interval_s": 1.0,
        **overrides,
    }
    return settings.with_overrides(**values)


def start_collector(spawn: Spawn, settings: Settings, name: str = "collector") -> ServiceProcess:
    """Start `python collector/mqtt_collector.py` and wait until its subscription is acknowledged."""
    process = spawn(COLLECTOR_SCRIPT, settings=settings, name=name)
    wait_until(
        lambda: "subscribed to" in process.log_text() or not process.running(),
        20,
        message=lambda: f"collector subscription: {process.log_text()[-2000:]}",
    )
    assert process.running(), process.log_text()
    return process


def session_backlog(host: str, port: int, client_id: str, timeout_s: float = 10) -> list[str]:
    """What the broker still holds for the persistent session `client_id`, as topics.

    Resumes the session without acking anything, then publishes a sentinel: the broker delivers a
    session's queued and unacknowledged messages before anything newer, so all of them arrive first.
    """
    sentinel = data_topic("zz_sentinel")
    received: list[str] = []
    done = threading.Event()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == sentinel:
            done.set()
        else:
            received.append(message.topic)

    session = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
    session.on_message = on_message
    session.connect(host, port)
    session.loop_start()
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sentinel-{time.monotonic_ns()}")
    publisher.connect(host, port)
    publisher.loop_start()
    try:
        wait_until(session.is_connected, timeout_s, message="the session's reconnect")
        publisher.publish(sentinel, orjson.dumps(reading("zz_sentinel", 0, time.time())), qos=1).wait_for_publish(5)
        wait_until(done.is_set, timeout_s, message="the sentinel behind the session's backlog")
    finally:
        for client in (publisher, session):
            client.disconnect()
            client.loop_stop()
    return received
