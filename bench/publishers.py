"""Publishers for the benchmarks: the seed's payload, paced or as fast as a small window allows.

Each publisher runs as its own process (`python -m bench.publishers PLAN_JSON`, one JSON result
line on stdout), so the load never shares a Python interpreter with what it loads.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import PROJECT_ROOT, BrokerAddress
from rtds.mqtt import set_nodelay
from rtds.schema import data_topic

# Publishers keep at most this many QoS 1 messages unacknowledged (and paho's own window is the same,
# so paho never queues): paho rescans its outstanding messages on every PUBACK, so a large window
# makes the publisher, not the broker, the limit.
PUBLISH_WINDOW = 100
ACK_STALL_S = 30.0


def make_payload(device_id: str, seq: int, timestamp: float, rng: random.Random) -> bytes:
    """The seed's full flat payload with realistic float precision: about 500 bytes."""
    return orjson.dumps(
        {
            "device_id": device_id,
            "timestamp": timestamp,
            "speed": rng.uniform(0, 120),
            "seq": seq,
            "cpu_usage": rng.uniform(0, 100),
            "ram_usage": rng.uniform(0, 100),
            "memory_total": 8192.0,
            "memory_used": round(rng.uniform(2000, 8000), 3),
            "memory_available": round(rng.uniform(100, 6000), 3),
            "memory_percent": rng.uniform(0, 100),
            "disk_total": 500000.0,
            "disk_used": round(rng.uniform(100000, 400000), 3),
            "disk_free": round(rng.uniform(100000, 400000), 3),
            "disk_percent": rng.uniform(0, 100),
            "network_bytes_sent": float(rng.randrange(10**9)),
            "network_bytes_recv": float(rng.randrange(10**9)),
            "detection_label": "vehicle",
            "detection_confidence": rng.random(),
        }
    )


def device_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:05d}" for index in range(count)]


@dataclass
class PublishPlan:
    """What one publisher process sends. `rate` None means as fast as the window allows."""

    host: str
    port: int
    client_id: str
    device_ids: list[str]
    count: int | None = None
    rate: float | None = None
    duration_s: float = 0.0
    start_at: float = 0.0
    window: int = PUBLISH_WINDOW
    seed: int = 0


@dataclass
class PublishResult:
    published: int = 0
    acked: int = 0
    errors: int = 0
    payload_bytes: int = 0
    first_publish: float = 0.0
    last_publish: float = 0.0
    last_ack: float = 0.0
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def publish(plan: PublishPlan) -> PublishResult:
    """Send the plan's messages at QoS 1 and wait for every PUBACK.

    Single-threaded on purpose: without `loop_start()`, `publish()` writes to the socket at once and
    `loop()` reads the PUBACKs, so no message costs a hand-off between two threads.
    """
    result = PublishResult()
    connected = [False]

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        set_nodelay(client)
        connected[0] = True

    def on_publish(client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        result.acked += 1
        result.last_ack = time.time()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=plan.client_id, clean_session=True)
    client.max_inflight_messages_set(plan.window)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(plan.host, plan.port, keepalive=60)
    deadline = time.monotonic() + 10
    while not connected[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher could not connect to {plan.host}:{plan.port}")
        client.loop(timeout=0.05)

    rng = random.Random(plan.seed)
    topics = [data_topic(device_id) for device_id in plan.device_ids]
    seqs = [0] * len(topics)
    last_timestamps = [0.0] * len(topics)
    total = plan.count if plan.count is not None else round((plan.rate or 0) * plan.duration_s)
    interval = 1.0 / plan.rate if plan.rate else 0.0
    cpu_before = time.process_time()
    while time.time() < plan.start_at:
        client.loop(timeout=min(0.05, max(0.0, plan.start_at - time.time())))
    started = time.time()
    for index in range(total):
        if interval:
            due = started + index * interval
            while (delay := due - time.time()) > 0.0005:
                client.loop(timeout=min(delay, 0.1))
        if result.published - result.acked >= plan.window:
            _wait_for_acks(client, result, plan.window - 1)
        slot = index % len(topics)
        now = time.time()
        # Rows are keyed on (device_id, time): a device's timestamps must never repeat.
        timestamp = now if now > last_timestamps[slot] else last_timestamps[slot] + 1e-6
        last_timestamps[slot] = timestamp
        payload = make_payload(plan.device_ids[slot], seqs[slot], timestamp, rng)
        seqs[slot] += 1
        info = client.publish(topics[slot], payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            result.errors += 1
            continue
        result.published += 1
        result.payload_bytes += len(payload)
        if index == 0:
            result.first_publish = now
        if index % 32 == 31:
            client.loop(timeout=0)
    result.last_publish = time.time()
    _wait_for_acks(client, result, 0)
    result.cpu_s = time.process_time() - cpu_before
    client.disconnect()
    client.loop(timeout=0.1)
    return result


def _wait_for_acks(client: paho.Client, result: PublishResult, outstanding: int) -> None:
    """Run the network loop until at most `outstanding` messages await their PUBACK; fail if acks stop."""
    last_progress, acked = time.monotonic(), result.acked
    while result.published - result.acked > outstanding:
        client.loop(timeout=0.01)
        if result.acked != acked:
            last_progress, acked = time.monotonic(), result.acked
        elif time.monotonic() - last_progress > ACK_STALL_S:
            raise RuntimeError(
                f"the broker sent no PUBACK for {ACK_STALL_S:.0f} s ({result.published - result.acked} outstanding)"
            )


def run_publishers(plans: Sequence[PublishPlan], timeout_s: float = 600) -> list[PublishResult]:
    """Run each plan in its own process; returns their results once all have finished."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.publishers", json.dumps(asdict(plan))],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for plan in plans
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout_s)
            if process.returncode != 0:
                raise RuntimeError(
                    f"publisher failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}"
                )
            results.append(PublishResult(**json.loads(stdout.decode().strip().splitlines()[-1])))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def split_plans(host: str, port: int, *, prefix: str, devices: int, processes: int, **plan: Any) -> list[PublishPlan]:
    """One plan per process over disjoint device ids; `count` and `rate` are totals, split evenly."""
    ids = device_ids(prefix, devices)
    plans = []
    for index in range(processes):
        share = dict(plan)
        if plan.get("count") is not None:
            share["count"] = plan["count"] // processes + (1 if index < plan["count"] % processes else 0)
        if plan.get("rate") is not None:
            share["rate"] = plan["rate"] / processes
        plans.append(PublishPlan(host, port, f"bench-pub-{prefix}{index}", ids[index::processes], seed=index, **share))
    return plans


def preload(broker: BrokerAddress, *, total: int, processes: int, prefix: str = "bench_") -> list[PublishResult]:
    """Publish `total` messages as fast as possible from several processes (1,000 devices)."""
    plans = split_plans(broker.host, broker.port, prefix=prefix, devices=1000, processes=processes, count=total)
    results = run_publishers(plans)
    acked = sum(result.acked for result in results)
    if acked != total:
        raise RuntimeError(f"preload: only {acked} of {total} messages were acknowledged by the broker")
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.publishers PLAN_JSON", file=sys.stderr)
        return 2
    result = publish(PublishPlan(**json.loads(args[0])))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
