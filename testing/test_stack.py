"""`rtds up`, the quick start's first command, from an empty folder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rtds.broker import free_port
from rtds.testkit import wait_until

pytestmark = pytest.mark.slow


def _devices_with_rows(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT COUNT(DISTINCT device_id) FROM device_data").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_rtds_up_stores_ten_devices_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MQTT_BROKER_PORT": str(free_port()),
        "FLASK_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "rtds.cli", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: _devices_with_rows(tmp_path / "data" / "telemetry.db") == 10,
            15,
            message=lambda: f"rows for 10 devices; rtds up running: {up.poll() is None}",
        )
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert any("mosquitto" in p.name() for p in descendants)
        os.killpg(up.pid, signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert up.returncode == 0, output
    assert "http://" in output
    still_running = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
