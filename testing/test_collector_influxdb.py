"""The collector as a real process with STORE=influxdb: a real Mosquitto in front, the fake InfluxDB behind.

The fake accepts only valid line protocol and requests that match InfluxDB's OpenAPI description, and it
answers 503/400/401 on demand, so these tests show what the collector does with each answer: retry and
hold the acks, dead-letter, or hold and say so once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from influxdb_fake import FakeInfluxDB
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import MosquittoBroker
from rtds.schema import (
    FIELD_TYPES,
    MEASUREMENT,
    STORED_FIELDS,
    TelemetryRecord,
    data_topic,
    legacy_topic,
    parse_message,
)
from rtds.settings import Settings
from rtds.store.deadletter import DeadLetterStore
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

TOKEN = "test-token"
ORG = "my-org"
BUCKET = "vehicle-data"
PROBE = "probe"
SEED = "seed"
LABELS = ("car", "pickup truck", "a,b=c d", None)
Spawn = Callable[..., ServiceProcess]


@pytest.fixture
def fake() -> Iterator[FakeInfluxDB]:
    with FakeInfluxDB(token=TOKEN, org=ORG, buckets=(BUCKET,)) as server:
        yield server


def influx_settings(settings: Settings, fake: FakeInfluxDB, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": "influxdb",
        "influxdb_url": fake.url,
        "influxdb_token": TOKEN,
        "influxdb_org": ORG,
        "influxdb_bucket": BUCKET,
        "collector_retry_interval_ms": 500,
        "collector_max_retry_delay_ms": 2_000,
        **overrides,
    }
    return settings.with_overrides(**values)


class Publisher:
    """A paho publisher at QoS 1 that waits for every PUBACK."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"publisher-{os.getpid()}-{id(self)}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.sent: list[tuple[str, bytes]] = []

    def send(self, records: list[TelemetryRecord], topic_for: Callable[[str], str] = data_topic) -> None:
        messages = [(topic_for(record.device_id), json.dumps(record.to_payload()).encode()) for record in records]
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        self.sent.extend(messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: MosquittoBroker) -> Iterator[Publisher]:
    client = Publisher(broker)
    yield client
    client.close()


def fleet(now: float, per_device: int, *, first_seq: int = 0) -> list[TelemetryRecord]:
    """Ten devices' messages with every kind of field, labels that need escaping, integral floats."""
    records = []
    for step in range(first_seq, first_seq + per_device):
        for device in range(1, 11):
            label = LABELS[(step + device) % len(LABELS)]
            records.append(
                TelemetryRecord(
                    device_id=f"vehicle_{device:02d}",
                    timestamp=now + step * 0.01 + device * 0.000_123,
                    speed=float(40 + device) if step % 2 else 40.5 + step,
                    seq=step,
                    cpu_usage=10.0 + device,
                    ram_usage=55.25,
                    memory_total=8192.0,
                    memory_used=4915.0,
                    memory_available=3277.0,
                    memory_percent=60.0,
                    disk_total=500000.0,
                    disk_used=250000.0,
                    disk_free=250000.0,
                    disk_percent=50.0,
                    network_bytes_sent=1_000_000.0 + step,
                    network_bytes_recv=2_000_000.0,
                    detection_label=label,
                    detection_confidence=0.95 if label else None,
                    replayed=device == 4 and step == first_seq,
                )
            )
    return records


def start_collector(spawn: Spawn, settings: Settings) -> ServiceProcess:
    process = spawn("collector/mqtt_collector.py", settings=settings, name="collector")
    wait_until(lambda: "connected to" in process.log_text() or not process.running(), 20, message=process.log_text)
    assert process.running(), process.log_text()
    return process


def wait_subscribed(fake: FakeInfluxDB, publisher: Publisher) -> None:
    """Publish probes until the collector has tried to write one (so its subscription is in place)."""
    probes = iter(range(1_000))

    def probe_reached_store() -> bool:
        if any(b"device_id=probe" in request.body for request in write_requests(fake)):
            return True
        publisher.send([TelemetryRecord(PROBE, time.time(), 0.0, seq=next(probes))])
        return False

    wait_until(probe_reached_store, 20, interval_s=0.3, message="the collector's first write")


def write_requests(fake: FakeInfluxDB) -> list[Any]:
    return [request for request in fake.requests if request.path == "/api/v2/write"]


def device_points(fake: FakeInfluxDB) -> list[Any]:
    return [point for point in fake.points if point.tags["device_id"] not in (PROBE, SEED)]


def dead_letters(settings: Settings) -> list[Any]:
    letters = DeadLetterStore(settings.dead_letter_path)
    try:
        return letters.recent(1_000)
    finally:
        letters.close()


def assert_all_arrived_once(fake: FakeInfluxDB, records: list[TelemetryRecord]) -> None:
    points = device_points(fake)
    stored = sorted((point.tags["device_id"], point.fields["seq"]) for point in points)
    assert stored == sorted((record.device_id, record.seq) for record in records)


def test_ten_devices_arrive_as_valid_points_matching_the_sqlite_table(
    settings: Settings, spawn: Spawn, fake: FakeInfluxDB, publisher: Publisher, tmp_path: Path
) -> None:
    config = influx_settings(settings, fake)
    collector = start_collector(spawn, config)
    wait_subscribed(fake, publisher)
    started = time.time()
    records = fleet(time.time(), per_device=20)
    legacy = [record for record in records if record.device_id == "vehicle_10"]
    publisher.send([record for record in records if record.device_id != "vehicle_10"])
    publisher.send(legacy, topic_for=legacy_topic)
    wait_until(lambda: len(device_points(fake)) == len(records), 30, message=lambda: collector.log_text()[-2000:])
    assert collector.terminate() == 0
    finished = time.time()

    # Every line the collector sent was valid: the fake answers 400 to the whole batch otherwise.
    assert {request.status for request in write_requests(fake)} == {204}
    assert not dead_letters(config)

    # The same messages, parsed and written into SQLite, give the same tags and fields.
    parsed = [parse_message(topic, payload, now=time.time()) for topic, payload in publisher.sent]
    sqlite = SQLiteStore(tmp_path / "same-messages.db")
    sqlite.write([record for record in parsed if record.device_id != PROBE], collector="python", write_time=0.0)
    sqlite.close()
    rows = sqlite_rows(tmp_path / "same-messages.db")
    points = device_points(fake)
    assert len(points) == len(rows) == len(records)
    for point in points:
        row = rows[(point.tags["device_id"], point.time_ns // 1_000)]  # the device's own timestamp
        expected_tags = {"device_id": row["device_id"], "collector": "python"}
        if row["detection_label"] is not None:
            expected_tags["detection_label"] = row["detection_label"]
        assert point.measurement == MEASUREMENT and point.tags == expected_tags
        collector_times = ("collector_receive_time", "write_time")
        expected_fields = {n: row[n] for n in STORED_FIELDS if row[n] is not None and n not in collector_times}
        expected_fields["replayed"] = bool(row["replayed"])
        assert {n: v for n, v in point.fields.items() if n not in collector_times} == expected_fields
        for name, value in point.fields.items():
            assert type(value) is FIELD_TYPES[name], f"{name}={value!r}"
        received, written = point.fields["collector_receive_time"], point.fields["write_time"]
        assert started <= received <= written <= finished
    assert {point.tags.get("detection_label") for point in points} == set(LABELS)


def sqlite_rows(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        rows = [dict(row) for row in connection.execute(f"SELECT * FROM {MEASUREMENT}")]
    finally:
        connection.close()
    return {(row["device_id"], round(row["time"] * 1_000_000)): row for row in rows}


@pytest.mark.slow
def test_503_for_10_s_is_retried_with_acks_held_and_nothing_lost(
    settings: Settings, spawn: Spawn, fake: FakeInfluxDB, publisher: Publisher
) -> None:
    # Retry-After (1 s) is shorter than the collector's own interval (3 s): many attempts show it is honoured.
    config = influx_settings(
        settings, fake, collector_retry_interval_ms=3_000, collector_max_retry_delay_ms=5_000, collector_max_retries=100
    )
    collector = start_collector(spawn, config)
    wait_subscribed(fake, publisher)
    outage_s = 10.0
    fake.fail_for(outage_s, status=503, retry_after=1)
    outage_started = time.monotonic()
    records = fleet(time.time(), per_device=10)
    publisher.send(records)

    def refused_writes() -> int:
        return sum(1 for request in write_requests(fake) if request.status == 503)

    wait_until(lambda: refused_writes() >= 2, 10, message="two refused attempts")
    assert not device_points(fake)
    # The acks are held: a collector killed now loses nothing, because the broker still has every message.
    collector.kill()
    successor = start_collector(spawn, config)
    wait_until(lambda: len(device_points(fake)) == len(records), 40, message=lambda: successor.log_text()[-2000:])
    assert time.monotonic() - outage_started >= outage_s - 0.5, "nothing was stored while InfluxDB answered 503"
    assert_all_arrived_once(fake, records)
    assert refused_writes() >= 6, "retried about every Retry-After second, not every 3-5 s"
    assert not dead_letters(config)
    assert "503" in successor.log_text()
    assert successor.terminate() == 0


def test_a_rejected_batch_is_dead_lettered_with_the_servers_message_and_later_batches_go_through(
    settings: Settings, spawn: Spawn, fake: FakeInfluxDB, publisher: Publisher
) -> None:
    config = influx_settings(settings, fake)
    collector = start_collector(spawn, config)
    wait_subscribed(fake, publisher)
    wait_until(lambda: any(p.tags["device_id"] == PROBE for p in fake.points), 10)

    fake.fail_next(400, message="unable to parse 'device_data,device_id=vehicle_01': injected bad line")
    rejected = fleet(time.time(), per_device=1)[:1]
    publisher.send(rejected)
    letters = wait_until(lambda: dead_letters(config), 15, message=lambda: collector.log_text()[-2000:])
    assert len(letters) == 1
    letter = letters[0]
    assert letter.reason == "store_rejected"
    assert "injected bad line" in letter.detail
    assert json.loads(letter.payload)["seq"] == rejected[0].seq
    assert letter.topic == data_topic(rejected[0].device_id)

    # InfluxDB refuses only some points of later batches (a field type conflict, 422): only those are dead-lettered.
    seed_conflicting_field_type(fake, "detection_confidence")
    later = fleet(time.time() + 1, per_device=5, first_seq=1)
    publisher.send(later)
    accepted = [record for record in later if record.detection_confidence is None]
    refused = [record for record in later if record.detection_confidence is not None]
    wait_until(lambda: len(dead_letters(config)) == 1 + len(refused), 20, message=lambda: collector.log_text()[-2000:])
    wait_until(lambda: len(device_points(fake)) >= len(accepted), 10)
    stored = {(point.tags["device_id"], point.fields["seq"]) for point in device_points(fake)}
    assert stored == {(record.device_id, record.seq) for record in accepted}
    assert all("field type conflict" in letter.detail for letter in dead_letters(config)[: len(refused)])
    assert collector.terminate() == 0


def seed_conflicting_field_type(fake: FakeInfluxDB, field: str) -> None:
    """Store `field` as an integer, so the collector's float values of it conflict from now on."""
    line = f"{MEASUREMENT},device_id={SEED} {field}=1i {time.time_ns()}".encode()
    request = urllib.request.Request(
        f"{fake.url}/api/v2/write?org={ORG}&bucket={BUCKET}&precision=ns",
        data=line,
        method="POST",
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": "text/plain; charset=utf-8"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204


def test_a_refused_token_holds_everything_says_so_once_and_resumes_when_fixed(
    settings: Settings, spawn: Spawn, fake: FakeInfluxDB, publisher: Publisher
) -> None:
    fake.token = "the-token-was-rotated"
    config = influx_settings(settings, fake, collector_max_retry_delay_ms=1_000)
    collector = start_collector(spawn, config)
    wait_subscribed(fake, publisher)
    records = fleet(time.time(), per_device=3)
    publisher.send(records)

    def refused_writes() -> int:
        return sum(1 for request in write_requests(fake) if request.status == 401)

    wait_until(lambda: refused_writes() >= 3, 15, message="the collector keeps retrying")
    assert not fake.points and not dead_letters(config), "nothing written, nothing dead-lettered"
    complaints = [line for line in collector.log_text().splitlines() if "INFLUXDB_TOKEN" in line]
    assert len(complaints) == 1 and "ERROR" in complaints[0], complaints

    fake.token = TOKEN  # the operator fixes the server side
    wait_until(lambda: len(device_points(fake)) == len(records), 20, message=lambda: collector.log_text()[-2000:])
    assert_all_arrived_once(fake, records)
    assert not dead_letters(config)
    assert collector.terminate() == 0
