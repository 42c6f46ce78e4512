"""Scenario poison: what one hostile device costs the collector.

The same backlog twice, queued in the collector's offline session on a fresh broker (shipped config): once
all good readings, once with every other message a poison payload from one device (nested 1,025 deep, not
JSON, wrong types, NaN, a 100-bit seq; issue 13). Timed from the collector's start to the moment every good
reading is stored and every poison one dead-lettered; the ratio of the two rates is the price of the poison.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import bench_settings, drain_leftovers, fresh_dir, ratio, start_broker, start_service, target
from bench.measurement import sqlite_count
from rtds.schema import data_topic
from rtds.testkit import publish_all, wait_until

COLLECTOR_SCRIPT = "collector/mqtt_collector.py"
FULL = {"messages": 100_000}
QUICK = {"messages": 10_000}
TARGET_RATIO = 0.5  # the poisoned drain at least half as fast as the clean one
EVIL = "evil_00"
POISON = (
    b"[" * 1025 + b"]" * 1025,
    b'{"a":' * 1100 + b"1" + b"}" * 1100,
    b'{"device_id": "evil_00", "speed": ',
    b"\xff\xfe\x00 binary",
    b'{"device_id": "evil_00", "timestamp": 1, "speed": NaN}',
    b'"\\ud800"',
)


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params = dict(QUICK if quick else FULL)
    clean = _drain(workdir / "clean", params["messages"], poisoned=False)
    poisoned = _drain(workdir / "poisoned", params["messages"], poisoned=True)
    value = ratio(poisoned["msgs_per_s"], clean["msgs_per_s"])
    judged = target("poisoned drain / clean drain", value, TARGET_RATIO, at_least=True)
    return {
        "parameters": params,
        "figures": {"poisoned": poisoned},
        "baselines": {"clean": clean},
        "ratios": {"poisoned_vs_clean": value},
        "targets": [judged],
        "rows": [
            {
                "scenario": "poison",
                "figure": (
                    f"half of {params['messages']:,} msgs poison from one device: {poisoned['msgs_per_s']:,.0f} msg/s; "
                    f"{poisoned['stored']:,} good stored, {poisoned['dead_letters']:,} dead-lettered, "
                    f"{poisoned['left_unacked_on_broker']} left unacked"
                ),
                "baselines": f"the same count all good: {clean['msgs_per_s']:,.0f} msg/s",
                "ratios": f"poisoned / clean {value}",
                "target": f">= {TARGET_RATIO} (within 2 x of a clean run)",
                "met": judged["met"],
            }
        ],
    }


def _messages(count: int, *, poisoned: bool) -> list[tuple[str, bytes]]:
    now = time.time()
    messages = []
    for index in range(count):
        if poisoned and index % 2:
            messages.append((data_topic(EVIL), POISON[index // 2 % len(POISON)]))
            continue
        device_id = f"good_{index % 100:02d}"
        reading = {"device_id": device_id, "timestamp": now + index / 1000, "seq": index, "speed": 50.0 + index % 40}
        messages.append((data_topic(device_id), orjson.dumps(reading)))
    return messages


def _drain(workdir: Path, count: int, *, poisoned: bool) -> dict[str, Any]:
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    settings = bench_settings(workdir, broker)
    messages = _messages(count, poisoned=poisoned)
    good = sum(1 for topic, _ in messages if topic != data_topic(EVIL))
    try:
        prime = start_service(COLLECTOR_SCRIPT, settings, workdir, "prime")
        wait_until(lambda: "subscribed to" in prime.log_text(), 30, message=prime.log_text)
        prime.terminate()
        publish_all(broker.host, broker.port, messages)
        started = time.monotonic()
        collector = start_service(COLLECTOR_SCRIPT, settings, workdir, "collector")

        def handled() -> bool:
            rows = sqlite_count(settings.sqlite_path)
            letters = sqlite_count(settings.dead_letter_path, "SELECT COUNT(*) FROM dead_letters")
            return rows >= good and rows + letters >= count

        wait_until(handled, max(120.0, count / 500), interval_s=0.02, message=collector.log_text)
        elapsed_s = time.monotonic() - started
        collector.terminate()
        leftover = drain_leftovers(broker.host, broker.port, settings.mqtt_client_id)
        stored = sqlite_count(settings.sqlite_path)
        dead = sqlite_count(settings.dead_letter_path, "SELECT COUNT(*) FROM dead_letters")
    finally:
        broker.kill()
    return {
        "messages": count,
        "msgs_per_s": round(count / elapsed_s, 1),
        "seconds_from_start": round(elapsed_s, 3),
        "stored": stored,
        "dead_letters": dead,
        "left_unacked_on_broker": leftover,
    }
