"""One hostile device must not stop the fleet: poison payloads, oversize payloads and strange topics cost
nothing but their own dead letter, and the dead-letter file stays bounded.

Real Mosquitto with the shipped config, the real collector process, SQLite throughout.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import orjson
from collector_harness import (
    Key,
    Spawn,
    assert_exactly_once,
    collector_settings,
    reading,
    session_backlog,
    start_collector,
    stored_count,
)

from rtds.broker import MosquittoBroker
from rtds.schema import data_topic, status_topic
from rtds.settings import Settings
from rtds.store.deadletter import PAYLOAD_PREFIX_BYTES, DeadLetterStore
from rtds.testkit import publish_all, wait_until

EVIL = "vehicle_evil"


def poison(seq: int, now: float) -> tuple[bytes, str]:
    """The payload of the seq-th hostile message and the reason it must be dead-lettered for."""
    kinds: list[tuple[bytes, str]] = [
        (b"[" * 1025 + b"]" * 1025, "too_deep"),  # the 2 KB poison that stopped all storage
        (b'{"a":' * 1100 + b"1" + b"}" * 1100, "too_deep"),
        (b'{"device_id": "vehicle_evil", "speed": ', "not_json"),
        (b"\xff\xfe\x00" + bytes(range(256)), "not_json"),
        (orjson.dumps({**reading(EVIL, seq, now), "seq": str(seq)}), "wrong_type"),
        (orjson.dumps(reading(EVIL, seq, now))[:-1] + b', "speed": NaN}', "not_finite"),
        (orjson.dumps(reading(EVIL, seq, now))[:-1] + b', "seq": 1000000000000000000000000000000}', "wrong_type"),
        (b'"\\ud800"', "not_json"),
    ]
    return kinds[seq % len(kinds)]


def dead_letter_counts(path: str) -> Counter[str]:
    letters = DeadLetterStore(path)
    try:
        return Counter(letters.count_by_reason())
    finally:
        letters.close()


def test_20000_poison_messages_from_one_device_are_dead_lettered_and_the_fleet_is_stored(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings)
    collector = start_collector(spawn, config)
    now = time.time()
    good_devices = [f"vehicle_{number:02d}" for number in range(1, 5)]
    messages: list[tuple[str, bytes]] = []
    expected_reasons: Counter[str] = Counter()
    good: set[Key] = set()
    for seq in range(20_000):
        payload, reason = poison(seq, now)
        messages.append((data_topic(EVIL), payload))
        expected_reasons[reason] += 1
        if seq % 5 == 0:  # a good reading from one of the others every fifth hostile one: 4,000 in all
            device_id = good_devices[(seq // 5) % len(good_devices)]
            good_seq = seq // 5 // len(good_devices)
            messages.append((data_topic(device_id), orjson.dumps(reading(device_id, good_seq, now + good_seq / 100))))
            good.add((device_id, good_seq))
    publish_all(broker.host, broker.port, messages)

    wait_until(lambda: stored_count(config.sqlite_path) >= len(good), 60, message=collector.log_text)
    wait_until(
        lambda: sum(dead_letter_counts(config.dead_letter_path).values()) >= 20_000, 60, message=collector.log_text
    )
    assert_exactly_once(config.sqlite_path, good)
    assert dead_letter_counts(config.dead_letter_path) == expected_reasons
    assert collector.running()
    assert collector.terminate() == 0
    assert session_backlog(broker.host, broker.port, config.mqtt_client_id) == [], "every message was acked"
    print(f"good stored {len(good)} of {len(good)}, poison dead-lettered {sum(expected_reasons.values())}")


def test_oversize_payloads_cost_the_dead_letter_file_a_few_kilobytes(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    """1 MB and 16 MiB payloads stop at the broker (message_size_limit); one under the broker's limit but over
    the collector's is kept as its first 4 KiB, its size and its hash."""
    config = collector_settings(settings, collector_max_payload_bytes=8_192)
    collector = start_collector(spawn, config)
    now = time.time()
    over_the_collectors_limit = orjson.dumps(reading("vehicle_01", 1, now, pad="p" * 60_000))
    publish_all(
        broker.host,
        broker.port,
        [
            (data_topic("vehicle_01"), b"x" * 1_000_000),
            (data_topic("vehicle_01"), b"y" * 16 * 2**20),
            (data_topic("vehicle_01"), over_the_collectors_limit),
            (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 2, now + 1))),
        ],
        window=4,
    )
    wait_until(lambda: stored_count(config.sqlite_path) == 1, 20, message=collector.log_text)
    wait_until(lambda: dead_letter_counts(config.dead_letter_path), 20, message=collector.log_text)
    letters = DeadLetterStore(config.dead_letter_path)
    try:
        (letter,) = letters.recent()
    finally:
        letters.close()
    assert letter.reason == "too_large"
    assert letter.payload == over_the_collectors_limit[:PAYLOAD_PREFIX_BYTES]
    assert letter.payload_size == len(over_the_collectors_limit)
    assert letter.payload_sha256 == hashlib.sha256(over_the_collectors_limit).hexdigest()
    assert collector.terminate() == 0
    size = sum(path.stat().st_size for path in Path(config.dead_letter_path).parent.glob("dead_letters.db*"))
    assert size < 256 * 1024, f"the dead-letter files take {size} bytes"


def test_a_topic_deeper_than_a_device_id_is_dead_lettered_and_presence_is_not(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings)
    collector = start_collector(spawn, config)
    now = time.time()
    publish_all(
        broker.host,
        broker.port,
        [
            ("device/data/vehicle_01/extra", orjson.dumps(reading("vehicle_01", 0, now))),
            ("device/data/a/b", orjson.dumps(reading("a", 0, now))),
            ("device/telemetry", b"{}"),
            (status_topic("vehicle_01"), b"online"),
            (data_topic("vehicle_01"), orjson.dumps(reading("vehicle_01", 1, now))),
        ],
        window=5,
    )
    wait_until(lambda: stored_count(config.sqlite_path) == 1, 20, message=collector.log_text)
    wait_until(lambda: sum(dead_letter_counts(config.dead_letter_path).values()) == 3, 20, message=collector.log_text)
    assert dead_letter_counts(config.dead_letter_path) == {"bad_topic": 3}
    assert collector.terminate() == 0
    assert session_backlog(broker.host, broker.port, config.mqtt_client_id) == []


def test_the_dead_letter_file_stays_under_its_cap_and_counts_what_it_deleted(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings, dead_letter_max_mb=0.25)
    collector = start_collector(spawn, config)
    junk = [(data_topic("vehicle_01"), b"not json " + str(index).encode() + b"." * 4_000) for index in range(600)]
    publish_all(broker.host, broker.port, junk)
    letters = DeadLetterStore(config.dead_letter_path)
    try:
        wait_until(
            lambda: sum(letters.count_by_reason().values()) + letters.evicted() == len(junk),
            30,
            message=collector.log_text,
        )
        kept, evicted = sum(letters.count_by_reason().values()), letters.evicted()
        newest = letters.recent(limit=1)[0]
    finally:
        letters.close()
    assert evicted > 0 and kept < len(junk)
    assert newest.payload.startswith(b"not json 599"), "the oldest go first"
    connection_bytes = Path(config.dead_letter_path).stat().st_size
    assert connection_bytes < 0.25 * 2**20 * 1.5, connection_bytes
    log = collector.log_text()
    assert "at its cap (DEAD_LETTER_MAX_MB=0.25)" in log, log[-2000:]
    assert collector.terminate() == 0
    assert f"oldest dead letters deleted at the cap {evicted}" in collector.log_text().split("collector stopped")[1]
