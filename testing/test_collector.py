"""The collector as a real process (`python collector/mqtt_collector.py`) between a real Mosquitto and SQLite.

Failures (crashes, a locked store, a collector outage) are in test_collector_failures.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import time

import orjson
from collector_harness import (
    Fleet,
    Spawn,
    assert_exactly_once,
    collector_settings,
    mosquitto_pub,
    publish_backlog,
    reading,
    session_backlog,
    start_collector,
    stored_count,
    stored_rows,
)

from collector.counters import CollectorCounters, describe
from collector.retry import RetryPolicy
from collector.service import Collector
from rtds.broker import MosquittoBroker, free_port
from rtds.schema import STORED_FIELDS, data_topic, legacy_topic
from rtds.settings import Settings, load_settings
from rtds.store.deadletter import PAYLOAD_PREFIX_BYTES, DeadLetterStore
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import wait_until


def test_ten_devices_every_message_is_stored_exactly_once(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    """The issue's "10 devices for 30 s", scaled to 10 devices at 20 msg/s (twice the simulator's rate)
    until 800 messages are out, about 4 s: the property holds per message, so more time adds nothing."""
    config = collector_settings(settings)
    collector = start_collector(spawn, config)
    with Fleet(broker.host, broker.port, 10, interval_s=0.05).start() as fleet:
        wait_until(lambda: fleet.published >= 800, 30)
        sent = fleet.stop_and_wait_for_acks()
    assert len(sent) >= 800
    wait_until(lambda: stored_count(config.sqlite_path) >= len(sent), 20, message=collector.log_text)
    assert_exactly_once(config.sqlite_path, sent)

    for row in stored_rows(config.sqlite_path, "vehicle_03"):
        assert row["collector"] == "python" and row["detection_label"] == "car"
        assert row["publish_timestamp"] == row["time"]
        assert row["collector_receive_time"] <= row["write_time"]
        assert all(row[name] is not None for name in STORED_FIELDS)
    log = collector.log_text()
    assert re.search(r"INFO .*last \d+ s: received \d+ \(\d+\.\d/s\), written", log), log
    assert collector.terminate() == 0
    assert f"written {len(sent)} " in collector.log_text().split("collector stopped after")[1]


def test_bad_payloads_from_mosquitto_pub_are_dead_lettered_by_reason_and_the_collector_carries_on(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    # The shipped broker refuses payloads over 64 KiB itself; a lower collector limit shows too_large.
    config = collector_settings(settings, collector_max_payload_bytes=32_768)
    collector = start_collector(spawn, config)
    now = time.time()
    good = orjson.dumps(reading("vehicle_01", 0, now))
    bad: list[tuple[str, bytes, str]] = [
        (data_topic("vehicle_01"), b'{"device_id": "vehicle_01", "speed": ', "not_json"),
        (data_topic("vehicle_01"), b"\xff\xfe\x00\x01 binary", "not_json"),
        (data_topic("vehicle_01"), b'{"device_id":"vehicle_01","timestamp":%d,"speed":NaN}' % now, "not_finite"),
        (data_topic("vehicle_01"), b'{"device_id":"vehicle_01","timestamp":%d,"speed":Infinity}' % now, "not_finite"),
        (data_topic("vehicle_01"), b"[1, 2, 3]", "not_object"),
        (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 1, now, speed="fast")), "wrong_type"),
        (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 2, now, speed=True)), "wrong_type"),
        (data_topic("bad id"), orjson.dumps(reading("bad id", 3, now)), "bad_device_id"),
        (data_topic("vehicle_02"), orjson.dumps(reading("vehicle_01", 4, now)), "device_id_mismatch"),
        (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 5, now - 2 * 86_400)), "timestamp_out_of_range"),
        (data_topic("vehicle_01"), orjson.dumps({"device_id": "vehicle_01", "timestamp": now}), "missing_field"),
        (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 6, now, pad="x" * 40_000)), "too_large"),
    ]
    mosquitto_pub(broker.port, data_topic("vehicle_01"), good)
    for topic, payload, _ in bad:
        mosquitto_pub(broker.port, topic, payload)
    mosquitto_pub(broker.port, legacy_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 7, now + 1)))

    letters = DeadLetterStore(config.dead_letter_path)
    try:
        wait_until(lambda: sum(letters.count_by_reason().values()) >= len(bad), 20, message=collector.log_text)
        wait_until(lambda: stored_count(config.sqlite_path) == 2, 10, message=collector.log_text)
        kept = {(letter.topic, letter.payload_sha256): letter for letter in letters.recent(limit=100)}
    finally:
        letters.close()
    assert len(kept) == len(bad)
    for topic, payload, reason in bad:
        letter = kept[(topic, hashlib.sha256(payload).hexdigest())]
        assert letter.reason == reason, (payload[:60], letter.detail)
        assert letter.detail
        assert letter.payload == payload[:PAYLOAD_PREFIX_BYTES] and letter.payload_size == len(payload)
    assert sorted(row["seq"] for row in stored_rows(config.sqlite_path, "vehicle_01")) == [0, 7]

    assert collector.running()
    log = collector.log_text()
    reasons = {reason for _, _, reason in bad}
    assert len(re.findall("WARNING .*rejected a message", log)) == len(reasons), (
        "one warning per reason, not per message"
    )
    assert collector.terminate() == 0
    summary = collector.log_text().split("collector stopped after")[1]
    assert f"rejected {len(bad)} (" in summary and "not_json 2" in summary and "dead-lettered 12" in summary


def test_flat_and_nested_payloads_store_the_same_fields(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings)
    collector = start_collector(spawn, config)
    now = time.time()
    flat = reading("flat_01", 5, now)
    nested = {
        "device_id": "nested_01",
        "timestamp": now,
        "seq": 5,
        "speed": flat["speed"],
        "telemetry": {
            "cpu_usage": flat["cpu_usage"],
            "ram_usage": flat["ram_usage"],
            "memory": {name: flat[f"memory_{name}"] for name in ("total", "used", "available", "percent")},
            "disk": {name: flat[f"disk_{name}"] for name in ("total", "used", "free", "percent")},
            "network": {name: flat[f"network_{name}"] for name in ("bytes_sent", "bytes_recv")},
        },
        "detection": {"label": flat["detection_label"], "confidence": flat["detection_confidence"]},
    }
    mosquitto_pub(broker.port, data_topic("flat_01"), orjson.dumps(flat))
    mosquitto_pub(broker.port, data_topic("nested_01"), orjson.dumps(nested))
    wait_until(lambda: stored_count(config.sqlite_path) == 2, 15, message=collector.log_text)

    (flat_row,) = stored_rows(config.sqlite_path, "flat_01")
    (nested_row,) = stored_rows(config.sqlite_path, "nested_01")
    differing = {"device_id", "collector_receive_time", "write_time"}
    assert {k: v for k, v in flat_row.items() if k not in differing} == {
        k: v for k, v in nested_row.items() if k not in differing
    }
    assert all(flat_row[name] is not None for name in STORED_FIELDS)
    assert collector.interrupt() == 0, "Ctrl-C stops it cleanly too"


def test_sigterm_writes_and_acks_what_is_buffered_then_exits_0_with_a_summary(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    """A lock on the database keeps 50 messages in the collector's buffer; SIGTERM arrives; the lock goes.

    The collector must write them, ack them (the broker holds nothing for its session afterwards), exit 0."""
    config = collector_settings(settings, collector_summary_interval_s=0.2)
    collector = start_collector(spawn, config)
    holder = sqlite3.connect(config.sqlite_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sent = publish_backlog(broker.host, broker.port, 50, prefix="term_")
        wait_until(lambda: "buffered 50" in collector.log_text(), 20, message=collector.log_text)
        os.killpg(collector.pid, signal.SIGTERM)
        wait_until(lambda: "stopping" in collector.log_text(), 10, message=collector.log_text)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: not collector.running(), 15, message=collector.log_text)
    assert collector.process is not None and collector.process.returncode == 0, collector.log_text()
    assert_exactly_once(config.sqlite_path, sent)
    summary = collector.log_text().split("collector stopped after")[1]
    assert "written 50 " in summary and "buffered 0" in summary
    assert session_backlog(broker.host, broker.port, config.mqtt_client_id) == []


def test_a_shared_subscription_group_splits_the_stream_and_stores_each_message_once(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings, collector_shared_group="collectors")
    first = start_collector(spawn, config.with_overrides(mqtt_client_id="collector-a"), name="collector-a")
    second = start_collector(spawn, config.with_overrides(mqtt_client_id="collector-b"), name="collector-b")
    assert "$share/collectors/device/#" in first.log_text()
    sent = publish_backlog(broker.host, broker.port, 400, prefix="shared_")
    wait_until(lambda: stored_count(config.sqlite_path) >= len(sent), 20, message=first.log_text)
    assert_exactly_once(config.sqlite_path, sent)
    for collector in (first, second):
        assert collector.terminate() == 0
        received = int(re.findall(r"collector stopped after .*?: received (\d+)", collector.log_text())[0])
        assert 0 < received < len(sent), "each member of the group took a share"


def test_real_device_simulators_end_to_end(broker: MosquittoBroker, settings: Settings, spawn: Spawn) -> None:
    """Three `devices/device_simulator.py` processes at 20 msg/s into the collector: every reading they
    generated (seq 0 .. n-1, as their summaries report) is stored exactly once."""
    config = collector_settings(settings, device_publish_interval_s=0.05)
    collector = start_collector(spawn, config)
    device_ids = ["vehicle_01", "vehicle_02", "vehicle_03"]
    devices = [
        spawn("devices/device_simulator.py", device_id, settings=config, name=device_id) for device_id in device_ids
    ]
    wait_until(lambda: stored_count(config.sqlite_path) >= 60, 30, message=lambda: devices[0].log_text())
    for device in devices:
        assert device.terminate() == 0, device.log_text()
    generated: dict[str, int] = {}
    for device_id, device in zip(device_ids, devices, strict=True):
        summary = device.log_text().split(f"{device_id}: stopped;")[1]
        assert int(re.search(r"still queued (\d+)", summary).group(1)) == 0, summary
        generated[device_id] = int(re.search(r"generated (\d+)", summary).group(1))
    sent = {(device_id, seq) for device_id, count in generated.items() for seq in range(count)}
    wait_until(lambda: stored_count(config.sqlite_path) >= len(sent), 15, message=collector.log_text)
    assert_exactly_once(config.sqlite_path, sent)
    assert collector.terminate() == 0


def test_retry_delays_double_from_the_interval_to_a_cap_of_a_few_seconds_and_probe_after_the_retries() -> None:
    policy = RetryPolicy.from_settings(load_settings(env_file=None, environ={}))
    assert policy == RetryPolicy(first_delay_s=0.5, max_delay_s=2.0, max_retries=3)
    assert [policy.delay_s(failures) for failures in range(1, 7)] == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert [policy.probes_first(failures) for failures in (3, 4)] == [False, True]
    assert policy.delay_s(1, retry_after_s=1.5) == 1.5, "the store's Retry-After is honoured"
    assert policy.delay_s(2, retry_after_s=300) == 2.0, "but never beyond the cap"
    assert policy.delay_s(2, retry_after_s=0) > 0, "a Retry-After of 0 is no busy loop"


def test_the_summary_line_names_rates_reasons_batches_and_write_latency() -> None:
    counters = CollectorCounters(received=300, retries=2, dead_lettered=3)
    counters.count_rejected("not_json", 2)
    counters.count_rejected("wrong_type")
    counters.count_batch(250, 0.004)
    counters.count_batch(47, 0.002)
    line = describe(counters, 10.0, buffered=5)
    assert line == (
        "received 300 (30.0/s), written 297 (29.7/s), rejected 3 (not_json 2, wrong_type 1), dead-lettered 3, "
        "retries 2, batches 2 (avg 148.5, max 250), write ms avg 3.00 max 4.00, buffered 5"
    )
    window, snapshot = counters.take_window(CollectorCounters(received=100, batches=1, written=250))
    assert (window.received, window.written, window.batches, window.batch_size_max) == (200, 47, 1, 250)
    assert counters.take_window(snapshot)[0].batch_size_max == 0, "window maxima restart at each summary"


def test_a_collector_without_a_broker_keeps_trying_and_still_stops_promptly(settings: Settings) -> None:
    config = settings.with_overrides(mqtt_broker_port=free_port())
    store = SQLiteStore(config.sqlite_path)
    dead_letters = DeadLetterStore(config.dead_letter_path)
    collector = Collector(config, store, dead_letters)
    collector.start()
    try:
        assert not collector.wait_subscribed(1.5)
    finally:
        started = time.monotonic()
        assert collector.stop()
        assert time.monotonic() - started < 5
        store.close()
        dead_letters.close()
