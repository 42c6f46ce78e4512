"""`rtds bench --quick` runs every scenario against real processes and writes its JSON.

Timings depend on the machine and on whatever else runs on it, so nothing here asserts one:
only that each scenario ran to the end and recorded the fields the README's table is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import SCENARIOS
from rtds.broker import PROJECT_ROOT

MACHINE_FIELDS = ("cpu_model", "logical_cores", "memory_gb", "python", "mosquitto", "packages", "git_commit")
PACKAGES = ("paho-mqtt", "orjson", "flask-socketio", "influxdb-client")
SCENARIO_FIELDS = ("parameters", "figures", "baselines", "ratios", "targets", "rows", "elapsed_s")
ROW_FIELDS = ("scenario", "figure", "baselines", "ratios", "target", "met")
# Figures each scenario must have measured (not their values).
FIGURES = {
    "drain": ("msgs_per_s", "stored", "left_unacked_on_broker"),
    "latency": ("100", "1000", "10000"),
    "fleet": ("in_process",),
    "dashboard": ("jitter_p95_ms", "payload_bytes_per_tick", "server"),
    "report": ("wall_s", "peak_rss_mb"),
    "recovery": ("2000", "10000"),  # the quick backlogs
    "poison": ("poisoned",),
    "cluster": ("one_node", "three_nodes"),
}
BASELINES = {"drain": ("paho_batched_ack", "paho_auto_ack", "mosquitto_sub", "naive_collector")}


@pytest.mark.slow
def test_quick_bench_runs_every_scenario_and_writes_its_json(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "rtds.cli", "bench", "--quick", "--json-only", "--results-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=280,
        check=False,
    )
    output = completed.stdout.decode(errors="replace")
    assert completed.returncode == 0, output[-4000:] + completed.stderr.decode(errors="replace")[-4000:]

    written = sorted(tmp_path.glob("*-quick.json"))
    assert [path.name for path in written if path.name != "latest-quick.json"], "no dated results file"
    document = json.loads((tmp_path / "latest-quick.json").read_text())
    for chart in (tmp_path / "latest-quick.png", *(path.with_suffix(".png") for path in written)):
        assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), f"{chart.name} is not a PNG chart"
    assert json.loads(output) == document
    assert document["quick"] is True

    machine = document["machine"]
    for field in MACHINE_FIELDS:
        assert machine.get(field) is not None, f"machine description lacks {field}"
    for package in PACKAGES:
        assert machine["packages"].get(package), f"no version recorded for {package}"

    assert set(document["scenarios"]) == set(SCENARIOS)
    for name, outcome in document["scenarios"].items():
        assert "error" not in outcome, f"{name} failed: {outcome.get('traceback', outcome['error'])}"
        for field in SCENARIO_FIELDS:
            assert field in outcome, f"{name} lacks {field}"
        for figure in FIGURES[name]:
            assert figure in outcome["figures"], f"{name} did not measure {figure}"
        for baseline in BASELINES.get(name, ()):
            assert outcome["baselines"][baseline].get("msgs_per_s"), f"{name} baseline {baseline} did not run"
        assert outcome["targets"], f"{name} judged no target"
        for judged in outcome["targets"]:
            assert judged["value"] is not None and isinstance(judged["met"], bool), f"{name}: {judged}"
        for row in outcome["rows"]:
            assert all(field in row for field in ROW_FIELDS), f"{name} row lacks a column: {row}"

    drain = document["scenarios"]["drain"]["figures"]
    assert drain["stored"] == drain["expected"], "the drain lost messages"
    for rate in ("100", "1000", "10000"):
        assert document["scenarios"]["latency"]["figures"][rate]["count"] > 0
