"""What every benchmark scenario shares: fresh folders, our broker, persistent sessions, services, targets."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.measurement import sqlite_count
from bench.publishers import make_payload
from rtds.broker import BrokerAddress, MosquittoBroker
from rtds.schema import DATA_SUBSCRIPTIONS, data_topic
from rtds.settings import Settings, load_settings
from rtds.testkit import ServiceProcess

PROBE_DEVICE = "probe_0"


def fresh_dir(path: Path) -> Path:
    """An empty folder: every scenario starts from nothing left by an earlier run."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def start_broker(workdir: Path, name: str) -> MosquittoBroker:
    """Mosquitto with the shipped docker/mosquitto/config/mosquitto.conf, on a free port."""
    return MosquittoBroker(workdir / name).start()


# --- persistent sessions -------------------------------------------------------------------


def _connect_session(host: str, port: int, client_id: str, *, on_message: Callable[..., None] | None = None):
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    if on_message is not None:
        client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{client_id} could not connect to {host}:{port}")
    return client


def create_session(host: str, port: int, client_id: str, topics: Iterable[str] = DATA_SUBSCRIPTIONS) -> None:
    """A persistent session subscribed at QoS 1, left offline so the broker queues for it."""
    subscribed = threading.Event()
    client = _connect_session(host, port, client_id)
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe([(topic, 1) for topic in topics])
    if not subscribed.wait(10):
        raise RuntimeError(f"{client_id}: the broker did not acknowledge the subscription")
    client.disconnect()
    client.loop_stop()


def drain_leftovers(host: str, port: int, client_id: str, *, quiet_s: float = 1.0, timeout_s: float = 60.0) -> int:
    """Resume a session and count what the broker still had for it (acking it), until `quiet_s` of silence."""
    received = 0
    last = [time.monotonic()]

    def on_message(*_: Any) -> None:
        nonlocal received
        received += 1
        last[0] = time.monotonic()

    client = _connect_session(host, port, client_id, on_message=on_message)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() - last[0] < quiet_s and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    return received


# --- services and results ------------------------------------------------------------------


def bench_settings(workdir: Path, broker: BrokerAddress, **overrides: Any) -> Settings:
    """Shipped defaults (no .env), pointed at the bench's broker and files under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return load_settings(env_file=None, environ={}).with_overrides(
        mqtt_broker_host=broker.host,
        mqtt_broker_port=broker.port,
        mqtt_client_id="bench-collector",
        sqlite_path=str(workdir / "telemetry.db"),
        dead_letter_path=str(workdir / "dead_letters.db"),
        device_queue_dir=str(workdir / "queues"),
        latency_data_path=str(workdir / "latency_samples.json"),
        collector_summary_interval_s=5.0,
        **overrides,
    )


def start_service(script: str, settings: Settings, workdir: Path, name: str, *args: str) -> ServiceProcess:
    """One of our entry points as a child process, logging to workdir/logs/<name>.log."""
    return ServiceProcess([script, *args], settings=settings, log_path=workdir / "logs" / f"{name}.log").start()


def wait_for_collector(broker: BrokerAddress, db: Path | str, process: ServiceProcess, timeout_s: float = 30) -> int:
    """Publish probe messages until one is stored: the collector is subscribed and writing.

    Returns the number of probe rows stored, so that counts can leave them out.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{os.getpid()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    rng = random.Random(0)
    deadline = time.monotonic() + timeout_s
    query = "SELECT COUNT(*) FROM device_data WHERE device_id = ?"
    before = sqlite_count(db, query, (PROBE_DEVICE,))
    try:
        seq = 0
        while time.monotonic() < deadline:
            if not process.running():
                raise RuntimeError(f"{process.args[1]} exited: {process.log_text()[-2000:]}")
            client.publish(data_topic(PROBE_DEVICE), make_payload(PROBE_DEVICE, seq, time.time(), rng), qos=1)
            seq += 1
            stored = sqlite_count(db, query, (PROBE_DEVICE,))
            if stored > before:
                time.sleep(0.3)  # let probes already in flight land, so the count stays put
                return sqlite_count(db, query, (PROBE_DEVICE,))
            time.sleep(0.2)
    finally:
        client.disconnect()
        client.loop_stop()
    raise RuntimeError(f"{process.args[1]} stored nothing within {timeout_s} s: {process.log_text()[-2000:]}")


def target(name: str, value: float | None, limit: float, *, at_least: bool, unit: str = "") -> dict[str, Any]:
    """One target of the issue and whether `value` meets it."""
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "op": ">=" if at_least else "<=",
        "unit": unit,
        "met": bool(met),
    }


def ratio(ours: float | None, baseline: float | None) -> float | None:
    if not ours or not baseline:
        return None
    return round(ours / baseline, 3)
