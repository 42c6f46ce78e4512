"""Past one machine: our clients on a real clustered broker, NATS with JetStream and MQTT.

Three nats-server processes routed to each other on loopback, each with its own store folder and ports,
MQTT sessions replicated on all three. Devices and the collector connect to different nodes and list the
others in MQTT_BROKER_FALLBACK_HOSTS. Nodes are killed with SIGKILL while the devices publish; the audit
is the single broker's: every message a device got a PUBACK for is stored, none twice.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_harness import Spawn, stored_keys

from devices.offline_queue import device_file, read_stats
from rtds.nats_cluster import NatsCluster, NatsNode, find_nats_server
from rtds.schema import MEASUREMENT
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, isolated_settings, wait_until

pytestmark = pytest.mark.skipif(find_nats_server() is None, reason="nats-server is not installed")

DEVICES = {"vehicle_01": 1, "vehicle_02": 1, "vehicle_03": 2, "vehicle_04": 2}  # device -> index of its first node
COLLECTOR_NODE = 0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats", size=3).start()
    yield nats
    nats.kill()


def on_node(settings: Settings, cluster: NatsCluster, node: NatsNode, **overrides: object) -> Settings:
    return settings.with_overrides(
        mqtt_broker_host=node.host,
        mqtt_broker_port=node.mqtt_port,
        mqtt_broker_fallback_hosts=cluster.fallback_hosts(node),
        **overrides,
    )


def test_workers_on_a_broker_without_shared_subscriptions_stop_with_a_clear_error_within_10_s(
    tmp_path: Path, spawn: Spawn
) -> None:
    """nats-server 2.9 grants `$share/<group>/device/#` and never delivers through it."""
    nats = NatsCluster(tmp_path / "nats", size=1).start()
    try:
        node = nats.nodes[0]
        settings = isolated_settings(tmp_path).with_overrides(
            mqtt_broker_host=node.host, mqtt_broker_port=node.mqtt_port, mqtt_client_id="nats-workers"
        )
        started = time.monotonic()
        collector = spawn("collector/mqtt_collector.py", "--workers", "2", settings=settings)
        wait_until(lambda: not collector.running(), 10, message=collector.log_text)
        elapsed_s = time.monotonic() - started
    finally:
        nats.kill()
    log = collector.log_text()
    assert collector.process is not None and collector.process.returncode == 2, log
    assert "does not support MQTT shared subscriptions" in log and f"{node.host}:{node.mqtt_port}" in log, log
    assert "COLLECTOR_WORKERS=1" in log, "it says what to do"
    print(f"workers on nats-server stopped after {elapsed_s:.1f} s")


def queued_seqs(settings: Settings, device_id: str) -> set[int]:
    connection = sqlite3.connect(device_file(settings.device_queue_dir, device_id))
    try:
        return {seq for (seq,) in connection.execute("SELECT seq FROM messages WHERE device_id = ?", (device_id,))}
    finally:
        connection.close()


def longest_pause_s(path: str, device_id: str) -> float:
    """The longest time between two of the device's consecutive readings arriving at the collector."""
    connection = sqlite3.connect(path)
    try:
        times = [
            received
            for (received,) in connection.execute(
                f"SELECT collector_receive_time FROM {MEASUREMENT} WHERE device_id = ? ORDER BY time", (device_id,)
            )
        ]
    finally:
        connection.close()
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def stored_per_device(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for device_id, _ in stored_keys(path):
        counts[device_id] = counts.get(device_id, 0) + 1
    return counts


@pytest.mark.slow
def test_killing_the_collectors_node_and_then_a_devices_node_loses_and_duplicates_nothing(
    cluster: NatsCluster, tmp_path: Path, spawn: Spawn
) -> None:
    base = isolated_settings(tmp_path).with_overrides(
        mqtt_client_id="cluster-collector", device_publish_interval_s=0.05, collector_summary_interval_s=2.0
    )
    nodes = cluster.nodes
    collector = spawn("collector/mqtt_collector.py", settings=on_node(base, cluster, nodes[COLLECTOR_NODE]))
    wait_until(lambda: "subscribed to" in collector.log_text(), 30, message=collector.log_text)
    devices: dict[str, ServiceProcess] = {
        device_id: spawn(
            "devices/device_simulator.py",
            device_id,
            settings=on_node(base, cluster, nodes[first]),
            name=device_id,
        )
        for device_id, first in DEVICES.items()
    }

    def every_device_has(count: int) -> bool:
        stored = stored_per_device(base.sqlite_path)
        return all(stored.get(device_id, 0) >= count for device_id in DEVICES)

    wait_until(lambda: every_device_has(40), 60, message=collector.log_text)

    # The collector's node dies; the collector resumes its session on the next node.
    nodes[COLLECTOR_NODE].kill()
    killed_at = sum(stored_per_device(base.sqlite_path).values())
    wait_until(
        lambda: sum(stored_per_device(base.sqlite_path).values()) >= killed_at + 200,
        30,
        message=lambda: "delivery after the collector's node died:\n" + collector.log_text()[-3000:],
    )
    # Its node comes back (the cluster needs two of three for its quorum), then the node of two devices dies.
    cluster.restart(nodes[COLLECTOR_NODE])
    devices_node = nodes[2]
    devices_node.kill()
    killed_at = stored_per_device(base.sqlite_path)
    wait_until(
        lambda: all(
            stored_per_device(base.sqlite_path).get(device_id, 0) >= killed_at.get(device_id, 0) + 40
            for device_id, first in DEVICES.items()
            if first == 2
        ),
        30,
        message=lambda: "delivery after the devices' node died:\n" + devices["vehicle_03"].log_text()[-3000:],
    )
    for device in devices.values():
        assert device.terminate() == 0, device.log_text()[-2000:]

    stats = read_stats(base.device_queue_dir)
    acked = {
        device_id: set(range(stats[device_id]["next_seq"])) - queued_seqs(base, device_id) for device_id in DEVICES
    }
    wanted = {(device_id, seq) for device_id, seqs in acked.items() for seq in seqs}
    wait_until(lambda: wanted <= set(stored_keys(base.sqlite_path)), 30, message=collector.log_text)
    stored = stored_keys(base.sqlite_path)
    print("\ndevice      acked  stored  missing  duplicated  longest pause")
    missing_total = duplicated_total = 0
    for device_id in DEVICES:
        mine = {seq: count for (device, seq), count in stored.items() if device == device_id}
        missing = len(acked[device_id] - set(mine))
        duplicated = sum(count - 1 for count in mine.values())
        missing_total += missing
        duplicated_total += duplicated
        pause = longest_pause_s(base.sqlite_path, device_id)
        print(
            f"{device_id}  {len(acked[device_id]):5d}  {len(mine):6d}  {missing:7d}  {duplicated:10d}  {pause:9.1f} s"
        )
    assert missing_total == 0 and duplicated_total == 0
    assert all(stats[device_id]["evicted"] == 0 for device_id in DEVICES)
    log = collector.log_text()
    assert log.count("session present: True") >= 1, "the collector resumed its session on another node"
    assert collector.terminate() == 0
