"""`rtds`: every seed script and its `rtds` command name themselves as they were started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtds.broker import PROJECT_ROOT
from rtds.cli import COMMANDS
from rtds.cli import main as rtds_main

# (the seed's script path, the rtds command that runs the same code)
SCRIPTS = [
    ("devices/device_simulator.py", "device"),
    ("devices/run_devices.py", "devices"),
    ("collector/mqtt_collector.py", "collector"),
    ("collector/device_status_api.py", "device-status"),
    ("dashboard/app.py", "dashboard"),
    ("monitoring/monitor_latency.py", "latency"),
    ("monitoring/collect_latency_data.py", "collect-latency"),
    ("monitoring/generate_latency_report.py", "report"),
    ("monitoring/investigate_spike.py", "spike"),
    ("monitoring/check_influxdb_performance.py", "write-perf"),
    ("monitoring/check_delivery.py", "delivery"),
    ("monitoring/check_mqtt_connection.py", "check"),
    ("monitoring/check_influxdb_connection.py", "check"),
    ("monitoring/check_socket.py", "check"),
]


@pytest.mark.parametrize(("script", "command"), SCRIPTS)
def test_help_names_the_program_as_it_was_started(
    script: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command in COMMANDS
    started = subprocess.run(
        [sys.executable, script, "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    stem = Path(script).stem
    assert re.match(rf"usage: {re.escape(stem)}(\.py)? ", started.stdout), started.stdout.splitlines()[0]

    with pytest.raises(SystemExit) as exit_info:
        rtds_main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rtds {command} ")
