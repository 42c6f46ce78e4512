"""Devices against real Mosquitto processes, checked by an independent witness subscriber.

Every scenario ends with the same question: for each device, does the witness hold every seq
from 0 to the last one the device generated?
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from devices.device import FIRST_CONNECT_GRACE_S, PUBLISH_WINDOW, DeviceSimulator
from devices.offline_queue import QueueDatabase, device_file, read_stats
from devices.telemetry import DeviceTelemetry
from rtds.broker import MosquittoBroker
from rtds.cli import main as rtds_main
from rtds.schema import parse_message
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, Witness, isolated_settings, wait_until

DEVICE_SCRIPT = "devices/device_simulator.py"
FAST_INTERVAL_S = 0.05
Spawn = Callable[..., ServiceProcess]


def device_settings(tmp_path: Path, broker_port: int, **overrides: Any) -> Settings:
    return isolated_settings(
        tmp_path,
        mqtt_broker_host="127.0.0.1",
        mqtt_broker_port=broker_port,
        device_publish_interval_s=FAST_INTERVAL_S,
        **overrides,
    )


def records_seen(witness: Witness, device_id: str) -> list[dict[str, Any]]:
    """The device's data messages in the order the witness received them."""
    topic = f"device/data/{device_id}"
    return [orjson.loads(message.payload) for message in witness.snapshot() if message.topic == topic]


def seqs_seen(witness: Witness, device_id: str) -> list[int]:
    return [record["seq"] for record in records_seen(witness, device_id)]


def generated(queue_dir: str, device_id: str) -> int:
    stats = read_stats(queue_dir).get(device_id)
    return int(stats["next_seq"]) if stats else 0


def assert_complete(seqs: list[int], last: int, *, exactly_once: bool) -> None:
    """Every seq 0..last arrived; first arrivals in order; with `exactly_once`, no repeats either."""
    missing = sorted(set(range(last + 1)) - set(seqs))
    assert not missing, f"missing seqs: {missing[:20]} ({len(missing)} in all)"
    first_arrivals = list(dict.fromkeys(seqs))
    assert first_arrivals == sorted(first_arrivals), "seqs arrived out of order"
    if exactly_once:
        assert seqs == list(range(last + 1))


# -- the publish rules, with a stand-in for paho's client --------------------------------------


class FakeClient:
    """Records publishes; acks come when the test calls the device's on_publish."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str, bytes]] = []
        self._mid = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        self._mid += 1
        self.published.append((self._mid, topic, payload))
        return SimpleNamespace(rc=0, mid=self._mid, is_published=lambda: True)

    def socket(self) -> None:
        return None


OK = SimpleNamespace(is_failure=False)


def test_publishes_in_order_within_the_window_never_while_offline_and_waits_for_pahos_resends(
    tmp_path: Path,
) -> None:
    settings = device_settings(tmp_path, 1883)
    database = QueueDatabase(tmp_path / "q.db")
    device = DeviceSimulator("vehicle_01", settings, database.queue("vehicle_01", 1000), telemetry=DeviceTelemetry())
    client = FakeClient()
    device.client = client  # type: ignore[assignment]

    def data_seqs() -> list[int]:
        return [
            orjson.loads(payload)["seq"] for _, topic, payload in client.published if topic.startswith("device/data")
        ]

    def ack(seqs: list[int]) -> None:
        for mid, topic, payload in client.published:
            if topic.startswith("device/data") and orjson.loads(payload)["seq"] in seqs:
                device._on_publish(client, None, mid, OK, None)  # type: ignore[arg-type]

    for _ in range(3):
        device.generate(time.time(), 0.1)
    device.pump()
    assert data_seqs() == [], "nothing may be published before the connection is up"

    device._on_connect(client, None, SimpleNamespace(session_present=False), OK, None)  # type: ignore[arg-type]
    for _ in range(PUBLISH_WINDOW + 7):
        device.generate(time.time(), 0.1)
    device.pump()
    assert data_seqs() == list(range(PUBLISH_WINDOW)), "at most the window is in flight, oldest first"

    ack(list(range(5)))
    device.pump()
    assert data_seqs() == list(range(PUBLISH_WINDOW + 5))
    assert device.queue.all_seqs()[0] == 5, "acked rows are deleted, the others stay"

    device._on_disconnect(client, None, None, OK, None)  # type: ignore[arg-type]
    device.generate(time.time(), 0.1)
    device.pump()
    assert len(data_seqs()) == PUBLISH_WINDOW + 5, "nothing is published while disconnected"

    # paho resends its own in-flight messages after on_connect; the device must not overtake them.
    device._on_connect(client, None, SimpleNamespace(session_present=True), OK, None)  # type: ignore[arg-type]
    ack([5, 6])
    device.pump()
    assert len(data_seqs()) == PUBLISH_WINDOW + 5
    ack(list(range(7, PUBLISH_WINDOW + 5)))
    device.pump()
    assert data_seqs() == list(range(device.queue.next_seq)), "the rest follows once paho's resends are acked"
    records = [orjson.loads(payload) for _, topic, payload in client.published if topic.startswith("device/data")]
    generated_offline = PUBLISH_WINDOW + 10  # the reading taken while disconnected
    assert [r["seq"] for r in records if r.get("replayed")] == [generated_offline], (
        "only the reading generated while the connection was lost is replayed; the three taken before the "
        "first connection (made at once) are live"
    )
    database.close()


# -- real brokers, real device processes ------------------------------------------------------


def test_three_devices_deliver_every_seq_once_in_order(tmp_path: Path, broker: MosquittoBroker, spawn: Spawn) -> None:
    settings = device_settings(tmp_path, broker.port, device_topics="both")
    ids = ["vehicle_01", "vehicle_02", "vehicle_03"]
    with Witness(broker.host, broker.port, ["device/data/+", "vehicle/speed/+", "device/status/+"]) as witness:
        devices = [spawn(DEVICE_SCRIPT, device_id, settings=settings) for device_id in ids]
        wait_until(lambda: all(len(seqs_seen(witness, d)) >= 160 for d in ids), 40, message="each device published 8 s")
        for device in devices:
            assert device.terminate() == 0, device.log_text()
        for device_id in ids:
            last = generated(settings.device_queue_dir, device_id) - 1
            wait_until(lambda d=device_id, n=last: len(seqs_seen(witness, d)) >= n + 1, 10)
            assert_complete(seqs_seen(witness, device_id), last, exactly_once=True)
            for record in records_seen(witness, device_id):
                parse_message(f"device/data/{device_id}", orjson.dumps(record), now=time.time())
            legacy = [m for m in witness.snapshot() if m.topic == f"vehicle/speed/{device_id}"]
            assert [orjson.loads(m.payload)["seq"] for m in legacy] == list(range(last + 1))
            statuses = [m.payload for m in witness.snapshot() if m.topic == f"device/status/{device_id}"]
            assert statuses[0] == b"online" and statuses[-1] == b"offline"
    assert "stopped; generated" in devices[0].log_text()


@pytest.mark.slow
def test_broker_killed_for_30_s_devices_queue_then_flush_without_a_gap(
    tmp_path: Path, start_broker: Callable[..., MosquittoBroker], spawn: Spawn
) -> None:
    broker = start_broker(name="broker")
    settings = device_settings(tmp_path, broker.port)
    ids = ["vehicle_01", "vehicle_02", "vehicle_03"]
    # A persistent session: the broker keeps the subscription across its restart and queues for
    # the witness, so what the witness misses while away is the broker's fault, not the devices'.
    witness = Witness(broker.host, broker.port, ["device/data/+"], client_id="witness-broker-kill", clean_session=False)
    witness.client.reconnect_delay_set(1, 1)
    try:
        devices = [spawn(DEVICE_SCRIPT, device_id, settings=settings) for device_id in ids]
        wait_until(lambda: all(len(seqs_seen(witness, d)) >= 20 for d in ids), 30, message="devices publishing")

        broker.wait_for_save()  # the witness's session must be on disk to survive the kill
        broker.kill()
        killed_at = time.monotonic()
        queue_dir = settings.device_queue_dir
        wait_until(
            lambda: all(s.get("state") == "offline" for s in (read_stats(queue_dir).get(d, {}) for d in ids)),
            10,
            message="devices noticed the broker is gone",
        )
        time.sleep(max(0.0, 30.0 - (time.monotonic() - killed_at)))  # the outage itself, not a wait for a result
        backlog = {d: read_stats(queue_dir)[d]["queued"] for d in ids}
        assert all(count >= 300 for count in backlog.values()), backlog

        start_broker(name="broker", port=broker.port)  # same port, same data folder
        wait_until(
            lambda: all(
                (s := read_stats(queue_dir)[d])["queued"] < 20 and s["reconnects"] >= 1 and s["state"] == "online"
                for d in ids
            ),
            60,
            message=lambda: f"devices flushed their queues: {read_stats(queue_dir)}",
        )
        for device in devices:
            assert device.terminate() == 0, device.log_text()
        for device_id in ids:
            last = generated(queue_dir, device_id) - 1
            wait_until(lambda d=device_id, n=last: set(range(n + 1)) <= set(seqs_seen(witness, d)), 20)
            # A broker killed mid-delivery may deliver some messages again; none may be missing.
            assert_complete(seqs_seen(witness, device_id), last, exactly_once=False)
            replayed = [r["seq"] for r in records_seen(witness, device_id) if r.get("replayed")]
            assert len(set(replayed)) >= backlog[device_id], "messages generated offline are marked replayed"
            assert read_stats(queue_dir)[device_id]["evicted"] == 0
    finally:
        witness.close()


def test_kill_minus_9_and_restart_carries_seq_on_and_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, spawn: Spawn
) -> None:
    settings = device_settings(tmp_path, broker.port)
    with Witness(broker.host, broker.port, ["device/data/vehicle_07"]) as witness:
        first = spawn(DEVICE_SCRIPT, "vehicle_07", settings=settings)
        wait_until(lambda: len(seqs_seen(witness, "vehicle_07")) >= 40, 30, message="first run publishing")
        first.kill()
        assert first.process is not None and first.process.returncode == -9
        before = generated(settings.device_queue_dir, "vehicle_07")

        second = spawn(DEVICE_SCRIPT, "vehicle_07", settings=settings)
        wait_until(lambda: max(seqs_seen(witness, "vehicle_07")) >= before + 40, 30, message="second run publishing")
        assert second.terminate() == 0, second.log_text()

        last = generated(settings.device_queue_dir, "vehicle_07") - 1
        wait_until(lambda: set(range(last + 1)) <= set(seqs_seen(witness, "vehicle_07")), 10)
        seqs = seqs_seen(witness, "vehicle_07")
        assert_complete(seqs, last, exactly_once=False)
        # The restart resumed the persisted seq: the same seq always carries the same reading.
        # (The copy a restart resends is marked replayed; the reading itself is the same.)
        by_seq: dict[int, dict[str, Any]] = {}
        for record in records_seen(witness, "vehicle_07"):
            reading = {key: value for key, value in record.items() if key != "replayed"}
            assert by_seq.setdefault(record["seq"], reading) == reading, "a seq was reused for a different reading"
        resumed_at = int(second.log_text().split("from seq ")[1].split()[0])
        assert 0 < resumed_at <= before


def test_readings_left_queued_by_an_earlier_run_are_sent_as_replayed(
    tmp_path: Path, broker: MosquittoBroker, spawn: Spawn
) -> None:
    settings = device_settings(tmp_path, broker.port)
    queue_file = device_file(settings.device_queue_dir, "vehicle_09")
    with Witness(broker.host, broker.port, ["device/data/vehicle_09"]) as witness:
        first = spawn(DEVICE_SCRIPT, "vehicle_09", settings=settings)
        wait_until(lambda: len(seqs_seen(witness, "vehicle_09")) >= 20, 30, message="first run publishing")
        # A frozen broker keeps the connection up but acknowledges nothing: readings generated on a live
        # connection pile up in the queue, and the device dies with them.
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: read_stats(settings.device_queue_dir)["vehicle_09"]["queued"] >= 40,
                20,
                message="readings queue behind the frozen broker",
            )
            first.kill()
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        with contextlib.closing(sqlite3.connect(queue_file)) as queue:
            left_over = [row[0] for row in queue.execute("SELECT seq FROM messages ORDER BY seq")]
        assert len(left_over) >= 40

        second = spawn(DEVICE_SCRIPT, "vehicle_09", settings=settings)
        resumed_at = left_over[-1] + 1
        wait_until(
            lambda: max(seqs_seen(witness, "vehicle_09")) >= resumed_at + 20, 30, message="second run publishing"
        )
        assert second.terminate() == 0, second.log_text()
        last = generated(settings.device_queue_dir, "vehicle_09") - 1
        wait_until(lambda: set(range(last + 1)) <= set(seqs_seen(witness, "vehicle_09")), 10)

    records = records_seen(witness, "vehicle_09")
    resent = {r["seq"] for r in records if r.get("replayed")}
    assert set(left_over) <= resent, f"sent by the second run but not marked: {sorted(set(left_over) - resent)[:10]}"
    assert not {seq for seq in resent if seq >= resumed_at}, "the second run's own readings are live"


def test_first_connect_fails_then_the_broker_appears_and_everything_arrives(
    tmp_path: Path, start_broker: Callable[..., MosquittoBroker], spawn: Spawn
) -> None:
    # Register the witness's persistent session on this port and data folder, then take the broker away.
    absent = start_broker(name="late-broker")
    witness = Witness(absent.host, absent.port, ["device/data/+"], client_id="witness-late", clean_session=False)
    witness.client.reconnect_delay_set(1, 1)
    absent.stop()
    try:
        settings = device_settings(tmp_path, absent.port)
        device = spawn(DEVICE_SCRIPT, "vehicle_late", settings=settings)
        # Past the grace a start has to connect: the backlog waited for the broker, so it is replayed.
        backlog = int(FIRST_CONNECT_GRACE_S / FAST_INTERVAL_S) + 20
        wait_until(
            lambda: read_stats(settings.device_queue_dir).get("vehicle_late", {}).get("queued", 0) >= backlog,
            30,
            message="the device queues while no broker listens",
        )
        assert read_stats(settings.device_queue_dir)["vehicle_late"]["state"] == "connecting"
        assert f"127.0.0.1:{absent.port}: connection refused; is Mosquitto running there?" in device.log_text()

        start_broker(name="late-broker", port=absent.port)
        wait_until(
            lambda: read_stats(settings.device_queue_dir)["vehicle_late"]["state"] == "online",
            30,
            message="the device connected",
        )
        connected_through = generated(settings.device_queue_dir, "vehicle_late") - 1
        wait_until(
            lambda: len(seqs_seen(witness, "vehicle_late")) >= connected_through + 20,
            30,
            message="the device flushed and publishes live",
        )
        assert device.terminate() == 0, device.log_text()
        last = generated(settings.device_queue_dir, "vehicle_late") - 1
        wait_until(lambda: len(seqs_seen(witness, "vehicle_late")) >= last + 1, 10)
        assert_complete(seqs_seen(witness, "vehicle_late"), last, exactly_once=True)
        replayed = [r["seq"] for r in records_seen(witness, "vehicle_late") if r.get("replayed")]
        assert replayed == list(range(len(replayed))), "the replayed readings are the ones from before the connection"
        assert backlog <= len(replayed) <= connected_through + 1
    finally:
        witness.close()


def test_a_bad_device_id_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert rtds_main(["device", "no spaces allowed"]) == 2
    assert "vehicle_01" in capsys.readouterr().err
