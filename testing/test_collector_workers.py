"""`rtds collector --workers N`: a supervisor and N collector processes in one shared-subscription group."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from collector_harness import (
    COLLECTOR_SCRIPT,
    Spawn,
    assert_exactly_once,
    collector_settings,
    publish_backlog,
    start_collector,
    stored_count,
)
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import PROJECT_ROOT, MosquittoBroker
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, wait_until


def start_workers(spawn: Spawn, settings: Settings, count: int) -> ServiceProcess:
    supervisor = spawn(COLLECTOR_SCRIPT, settings=settings.with_overrides(collector_workers=count), name="workers")
    wait_until(
        lambda: supervisor.log_text().count("subscribed to $share/") == count or not supervisor.running(),
        30,
        message=lambda: f"{count} workers subscribed: {supervisor.log_text()[-3000:]}",
    )
    assert supervisor.running(), supervisor.log_text()
    return supervisor


def worker_pids(supervisor: ServiceProcess) -> dict[str, int]:
    """client id -> pid of each running worker."""
    pids = {}
    for child in psutil.Process(supervisor.pid).children():
        command = child.cmdline()
        pids[command[command.index("--client-id") + 1]] = child.pid
    return pids


def worker_summaries(log: str) -> dict[str, dict[str, int]]:
    """'worker 1/2' -> the counts of its last 'collector stopped after' line."""
    summaries = {}
    for tag, line in re.findall(r"\[(worker \d+/\d+)\] \S+: (collector stopped after .*)", log):
        summaries[tag] = {name: int(value) for name, value in re.findall(r"(received|written) (\d+)", line)}
    return summaries


def test_two_workers_split_the_stream_store_each_message_once_and_stop_on_one_sigterm(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings)
    supervisor = start_workers(spawn, config, 2)
    pids = worker_pids(supervisor)
    client_ids = [f"{config.mqtt_client_id}-1", f"{config.mqtt_client_id}-2"]
    assert sorted(pids) == client_ids
    assert "$share/rtds-collectors/device/#" in supervisor.log_text()

    sent = publish_backlog(broker.host, broker.port, 2_000, devices=20, prefix="workers_")
    wait_until(lambda: stored_count(config.sqlite_path) >= len(sent), 30, message=supervisor.log_text)
    assert_exactly_once(config.sqlite_path, sent)

    os.kill(supervisor.pid, signal.SIGTERM)  # the supervisor alone, as `docker stop` signals PID 1
    assert supervisor.process is not None
    assert supervisor.process.wait(20) == 0, supervisor.log_text()
    assert not any(psutil.pid_exists(pid) for pid in pids.values()), "every worker stopped with the supervisor"
    log = supervisor.log_text()
    summaries = worker_summaries(log)
    assert sorted(summaries) == ["worker 1/2", "worker 2/2"], log
    assert all(0 < counts["received"] < len(sent) for counts in summaries.values()), summaries
    assert sum(counts["written"] for counts in summaries.values()) == len(sent), summaries
    assert re.search(r"2 collector workers stopped after [\d.]+ s: exit codes \[0, 0\], 0 restarts", log), log


def test_a_killed_worker_is_restarted_and_its_share_waits_for_it_in_its_session(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    config = collector_settings(settings)
    supervisor = start_workers(spawn, config, 2)
    pids = worker_pids(supervisor)
    # Freeze the supervisor so that the worker stays dead while the messages arrive.
    os.kill(supervisor.pid, signal.SIGSTOP)
    try:
        os.kill(pids[f"{config.mqtt_client_id}-1"], signal.SIGKILL)
        sent = publish_backlog(broker.host, broker.port, 600, devices=10, prefix="restart_")
        wait_until(lambda: stored_count(config.sqlite_path) > 0, 20, message=supervisor.log_text)
        # Worker 2 stores only its own share; the broker keeps worker 1's in worker 1's session.
        assert stored_count(config.sqlite_path) < len(sent)
    finally:
        os.kill(supervisor.pid, signal.SIGCONT)

    wait_until(lambda: stored_count(config.sqlite_path) >= len(sent), 30, message=supervisor.log_text)
    assert_exactly_once(config.sqlite_path, sent)
    log = supervisor.log_text()
    assert re.search(r"collector worker 1 \(\S+-1\) was killed by SIGKILL; restarting it in 1 s", log), log
    assert "[worker 1/2] collector.service: connected to" in log.split("was killed by SIGKILL")[1]
    assert "session present: True" in log.split("was killed by SIGKILL")[1]
    assert supervisor.terminate() == 0, supervisor.log_text()
    assert re.search(r"exit codes \[0, 0\], 1 restarts", supervisor.log_text())


def session_present(broker: MosquittoBroker, client_id: str) -> bool:
    """Whether the broker still holds a persistent session for `client_id` (CONNACK's flag)."""
    flags: list[bool] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda client, userdata, connect_flags, *_: flags.append(connect_flags.session_present)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: flags, 10, message="CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return flags[0]


def test_moving_from_one_collector_to_workers_then_forgetting_the_old_session_loses_nothing(
    broker: MosquittoBroker, settings: Settings, spawn: Spawn
) -> None:
    """The README's steps for changing --workers: start the new ones, stop the old one, forget its session."""
    config = collector_settings(settings)
    single = start_collector(spawn, config, name="single")
    before = publish_backlog(broker.host, broker.port, 200, prefix="before_")
    wait_until(lambda: stored_count(config.sqlite_path) >= len(before), 20, message=single.log_text)

    workers = start_workers(spawn, config, 2)
    assert single.terminate() == 0
    during = publish_backlog(broker.host, broker.port, 300, prefix="during_")  # to the group and the old session
    forget = spawn(COLLECTOR_SCRIPT, "--forget-session", config.mqtt_client_id, settings=config, name="forget")
    assert forget.process is not None and forget.process.wait(20) == 0, forget.log_text()
    assert f"deleted the session {config.mqtt_client_id!r}" in forget.log_text()
    assert not session_present(broker, config.mqtt_client_id)

    wait_until(lambda: stored_count(config.sqlite_path) >= len(before | during), 20, message=workers.log_text)
    assert_exactly_once(config.sqlite_path, before | during)
    assert workers.terminate() == 0, workers.log_text()


def test_workers_read_the_env_file_and_relative_paths_of_the_folder_they_are_started_in(
    broker: MosquittoBroker, tmp_path: Path, spawn: Spawn
) -> None:
    """`rtds collector --workers 2` run from a project folder of the user's: its .env and data/ apply."""
    (tmp_path / ".env").write_text(
        f"MQTT_BROKER_HOST={broker.host}\nMQTT_BROKER_PORT={broker.port}\nMQTT_CLIENT_ID=from-dotenv\n"
        "SQLITE_PATH=data/telemetry.db\nDEAD_LETTER_PATH=data/dead_letters.db\n"
    )
    supervisor = spawn(str(PROJECT_ROOT / COLLECTOR_SCRIPT), "--workers", "2", cwd=tmp_path, name="workers")
    wait_until(
        lambda: supervisor.log_text().count("subscribed to $share/") == 2 or not supervisor.running(),
        30,
        message=supervisor.log_text,
    )
    assert "client ids from-dotenv-1, from-dotenv-2" in supervisor.log_text()
    sent = publish_backlog(broker.host, broker.port, 200, prefix="dotenv_")
    database = tmp_path / "data" / "telemetry.db"
    wait_until(lambda: database.exists() and stored_count(database) >= len(sent), 20, message=supervisor.log_text)
    assert_exactly_once(database, sent)
    assert supervisor.terminate() == 0, supervisor.log_text()


def test_workers_stop_when_the_supervisor_is_killed(broker: MosquittoBroker, settings: Settings, spawn: Spawn) -> None:
    """No orphaned collectors holding sessions: Linux signals each worker when its supervisor dies, even by SIGKILL."""
    supervisor = start_workers(spawn, collector_settings(settings), 2)
    workers = [psutil.Process(pid) for pid in worker_pids(supervisor).values()]
    os.kill(supervisor.pid, signal.SIGKILL)

    def gone(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_until(lambda: all(gone(worker) for worker in workers), 15, message="workers outlived their supervisor")
    finally:
        for worker in workers:  # the fixture's clean-up reaches them only through the supervisor
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
