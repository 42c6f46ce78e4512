"""The fleet runner: one process per device with restarts, and the in-process fleet."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from devices.offline_queue import read_stats
from devices.run_devices import device_ids, fleet_table
from rtds.broker import MosquittoBroker
from rtds.errors import ConfigError
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, Witness, isolated_settings, wait_until

RUNNER = "devices/run_devices.py"
Spawn = Callable[..., ServiceProcess]


def fleet_settings(tmp_path: Path, broker: MosquittoBroker, **overrides: Any) -> Settings:
    return isolated_settings(
        tmp_path,
        broker,
        device_status_interval_s=1.0,
        **overrides,
    )


def seqs_by_device(witness: Witness) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for message in witness.snapshot():
        record = orjson.loads(message.payload)
        seen.setdefault(record["device_id"], []).append(record["seq"])
    return seen


def children_by_device(runner: ServiceProcess) -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for child in psutil.Process(runner.pid).children():
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if len(command) >= 2 and command[-2].endswith("device_simulator.py"):
            found[command[-1]] = child
    return found


def assert_every_seq_arrived(witness: Witness, queue_dir: str, ids: list[str]) -> None:
    stats = read_stats(queue_dir)
    for device_id in ids:
        expected = set(range(int(stats[device_id]["next_seq"])))
        wait_until(
            lambda d=device_id, e=expected: e <= set(seqs_by_device(witness).get(d, [])),
            15,
            message=lambda d=device_id, e=expected: f"{d}: missing {sorted(e - set(seqs_by_device(witness)[d]))[:10]}",
        )
        first_arrivals = list(dict.fromkeys(seqs_by_device(witness)[device_id]))
        assert first_arrivals == sorted(first_arrivals), f"{device_id}: out of order"


def test_device_ids_follow_the_seed_and_widen_for_big_fleets() -> None:
    assert device_ids("vehicle_", 10) == [f"vehicle_{n:02d}" for n in range(1, 11)]
    assert device_ids("car-", 1000)[-1] == "car-1000"
    with pytest.raises(ConfigError, match="--prefix"):
        device_ids("bad prefix ", 3)


def test_the_status_table_groups_a_large_fleet_by_state() -> None:
    rows = [
        {"device_id": f"v{n}", "state": "online" if n % 4 else "offline", "generated": 10, "sent": 9, "acked": 8,
         "queued": 2, "evicted": 0, "reconnects": 1}
        for n in range(100)
    ]  # fmt: skip
    table = fleet_table(rows, "fleet")
    assert [column.header for column in table.columns][:2] == ["state", "devices"]
    assert list(table.columns[1].cells) == ["25", "75", "100"]


def test_runner_restarts_a_killed_device_and_its_seq_continues(
    tmp_path: Path, broker: MosquittoBroker, spawn: Spawn
) -> None:
    settings = fleet_settings(tmp_path, broker, device_publish_interval_s=0.1)
    ids = device_ids("vehicle_", 10)
    with Witness(broker.host, broker.port, ["device/data/+"]) as witness:
        runner = spawn(RUNNER, "--count", "10", settings=settings)
        wait_until(lambda: len(children_by_device(runner)) == 10, 30, message=runner.log_text)
        wait_until(lambda: all(len(seqs_by_device(witness).get(d, [])) >= 10 for d in ids), 40, message="all publish")

        victim = children_by_device(runner)["vehicle_03"]
        os.kill(victim.pid, signal.SIGKILL)
        killed_at_seq = max(seqs_by_device(witness)["vehicle_03"])
        wait_until(
            lambda: getattr(children_by_device(runner).get("vehicle_03"), "pid", victim.pid) != victim.pid,
            20,
            message=runner.log_text,
        )
        wait_until(lambda: max(seqs_by_device(witness)["vehicle_03"]) >= killed_at_seq + 20, 30, message="restarted")
        wait_until(lambda: "restarts" in runner.log_text() and "vehicle_03" in runner.log_text(), 10)

        children = list(children_by_device(runner).values())
        assert runner.terminate() == 0, runner.log_text()
        assert not any(psutil.pid_exists(child.pid) for child in children), "every device process stopped"
        assert_every_seq_arrived(witness, settings.device_queue_dir, ids)
    output = runner.log_text()
    assert "vehicle_03 (pid" in output and "died with code -9; restarting" in output
    assert "final status" in output
    assert "stopped 10 devices (10 cleanly)" in output and "restarts 1" in output


def test_devices_stopped_by_the_ctrl_c_that_stops_the_runner_are_not_warned_about(
    tmp_path: Path, broker: MosquittoBroker, spawn: Spawn
) -> None:
    """Ctrl-C reaches the runner and its devices at once (one process group). On a busy machine the devices
    can exit before the runner's loop looks again; they stopped as asked, which is no news."""
    settings = fleet_settings(tmp_path, broker)
    ids = device_ids("vehicle_", 3)
    runner = spawn(RUNNER, "--count", "3", settings=settings)
    wait_until(
        lambda: all(read_stats(settings.device_queue_dir).get(d, {}).get("state") == "online" for d in ids),
        30,
        message=runner.log_text,
    )
    devices = list(children_by_device(runner).values())
    supervisor = psutil.Process(runner.pid)
    # Held still, the runner takes its signal only after every device has exited.
    supervisor.suspend()
    try:
        os.killpg(runner.pid, signal.SIGINT)
        wait_until(lambda: all(device.status() == psutil.STATUS_ZOMBIE for device in devices), 20)
    finally:
        supervisor.resume()
    assert runner.process is not None and runner.process.wait(30) == 0, runner.log_text()
    output = runner.log_text()
    assert "stopped 3 devices (3 cleanly)" in output
    assert "WARNING" not in output, output


def test_in_process_fleet_survives_a_broker_crash_without_a_gap(
    tmp_path: Path, start_broker: Callable[..., MosquittoBroker], spawn: Spawn
) -> None:
    broker = start_broker(name="broker")
    settings = fleet_settings(tmp_path, broker, device_publish_interval_s=0.1)
    ids = device_ids("vehicle_", 40)
    witness = Witness(broker.host, broker.port, ["device/data/+"], client_id="witness-fleet", clean_session=False)
    witness.client.reconnect_delay_set(1, 1)
    try:
        runner = spawn(RUNNER, "--in-process", "--count", "40", settings=settings)
        wait_until(lambda: all(len(seqs_by_device(witness).get(d, [])) >= 10 for d in ids), 30, message=runner.log_text)
        assert len(psutil.Process(runner.pid).children()) == 0, "in-process mode starts no child processes"

        # Freeze the fleet, let the broker deliver and save what it acknowledged, then crash it. A kill -9
        # also loses what Mosquitto acknowledged after its last save (1 s; README "Broker configuration"):
        # that is the broker's durability, not the devices', and the freeze keeps it out of this test.
        os.kill(runner.pid, signal.SIGSTOP)
        try:
            broker.wait_for_save()
            broker.kill()
        finally:
            os.kill(runner.pid, signal.SIGCONT)
        queue_dir = settings.device_queue_dir
        wait_until(
            lambda: all(read_stats(queue_dir)[d]["state"] == "offline" for d in ids), 10, message="fleet noticed"
        )
        wait_until(lambda: all(read_stats(queue_dir)[d]["queued"] >= 20 for d in ids), 10, message="fleet queues")
        start_broker(name="broker", port=broker.port)
        wait_until(
            lambda: all((s := read_stats(queue_dir)[d])["state"] == "online" and s["queued"] < 5 for d in ids),
            40,
            message=lambda: runner.log_text()[-3000:],
        )
        assert runner.terminate() == 0, runner.log_text()
        stats = read_stats(queue_dir)
        assert all(stats[d]["reconnects"] >= 1 and stats[d]["queued"] == 0 for d in ids), stats
        assert_every_seq_arrived(witness, queue_dir, ids)
        assert sorted(p.name for p in Path(queue_dir).glob("*.db")) == ["fleet_queue.db"]
    finally:
        witness.close()
    assert "stopped 40 devices" in runner.log_text()
