"""Scenario 4, dashboard: many devices in the store, many Socket.IO clients, one server process.

The store gets every device's latest row up front, and a writer thread in the bench process
writes a new row for every device each second (as a fleet at 1 msg/s would). The dashboard runs
as its own process (`python dashboard/app.py`, threading mode, the shipped defaults) and the
Socket.IO clients in several others (`python -m bench.dashboard_load clients ...`), so the
server's CPU is measured alone and no client interpreter decodes 50 payloads per tick.

Tick jitter is |interval between two consecutive `latest_data` events at one client − the push
interval|, over every client; delivery delay is receive time − the payload's server `time`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.harness import bench_settings, fresh_dir, start_broker, start_service, target
from bench.measurement import ResourceSampler, percentile
from bench.publishers import device_ids, make_payload
from dashboard.live import OrjsonCodec
from rtds.broker import PROJECT_ROOT, free_port, port_open
from rtds.schema import data_topic, parse_message
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import wait_until

DASHBOARD_SCRIPT = "dashboard/app.py"
LIVE_EVENT = "latest_data"
FULL = {"devices": 1_000, "clients": 50, "client_processes": 5, "duration_s": 60.0}
QUICK = {"devices": 100, "clients": 5, "client_processes": 1, "duration_s": 6.0}
WARMUP_S = 2.0
TARGET_JITTER_P95_MS = 100.0
TARGET_CPU_SHARE = 0.5


class FleetWriter:
    """Writes one new row per device every second, in one transaction, like a collector would."""

    def __init__(self, path: str, ids: Sequence[str]) -> None:
        self._store = SQLiteStore(path)
        self._ids = list(ids)
        self._rng = random.Random(1)
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-writer", daemon=True)
        self.write_once()

    def write_once(self) -> None:
        now = time.time()
        records = []
        for index, device_id in enumerate(self._ids):
            payload = make_payload(device_id, self._seq, now - 0.05 + index * 1e-6, self._rng)
            record = parse_message(data_topic(device_id), payload, now=now)
            record.collector_receive_time = now
            records.append(record)
        self._store.write(records, collector="python", write_time=time.time())
        self._seq += 1

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.write_once()

    def start(self) -> FleetWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._store.close()


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params: dict[str, Any] = dict(QUICK if quick else FULL)
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    settings = bench_settings(workdir, broker, flask_port=free_port(), dashboard_push_interval_s=1.0)
    params.update({"push_interval_s": settings.dashboard_push_interval_s, "transport": "websocket"})
    writer = FleetWriter(settings.sqlite_path, device_ids("dash_", params["devices"]))
    dashboard = start_service(DASHBOARD_SCRIPT, settings, workdir, "dashboard")
    try:
        wait_until(
            lambda: port_open(settings.flask_host, settings.flask_port) or not dashboard.running(),
            30,
            message="the dashboard to listen",
        )
        if not dashboard.running():
            raise RuntimeError(f"the dashboard exited: {dashboard.log_text()[-2000:]}")
        writer.start()
        url = f"http://{settings.flask_host}:{settings.flask_port}"
        # Several client processes, so that decoding 50 payloads per tick in one interpreter does not
        # show up as the server's jitter.
        per_process = _split(params["clients"], params["client_processes"])
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.dashboard_load", "clients", url, str(count), str(params["duration_s"])],
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for count in per_process
        ]
        # Measure the server only once every client is connected and the first ticks went out.
        for process in processes:
            assert process.stdout is not None
            ready = process.stdout.readline().decode().strip()
            if ready != "READY":
                assert process.stderr is not None
                raise RuntimeError(
                    f"Socket.IO clients did not connect: {ready} {process.stderr.read().decode()[-2000:]}"
                )
        time.sleep(WARMUP_S)
        sampler = ResourceSampler([dashboard.pid], interval_s=0.5).start()
        outputs = [process.communicate(timeout=params["duration_s"] + 120) for process in processes]
        usage = sampler.stop()
        for process, (_, stderr) in zip(processes, outputs, strict=True):
            if process.returncode != 0:
                raise RuntimeError(f"the Socket.IO clients failed: {stderr.decode(errors='replace')[-2000:]}")
        received = _merge([json.loads(stdout.decode().strip().splitlines()[-1]) for stdout, _ in outputs])
        server_live = _server_live_stats(url)
    finally:
        dashboard.terminate()
        writer.stop()
        broker.kill()

    figures = _figures(received, settings.dashboard_push_interval_s)
    figures["server"] = usage.as_dict()
    # The dashboard's own stop summary says how long its slowest store read + payload build took.
    slowest = re.search(r"slowest refresh (\d+) ms", dashboard.log_text())
    figures["server_slowest_refresh_ms"] = int(slowest.group(1)) if slowest else None
    # The server's own view of its last 120 ticks: how late each started and how long its emit took.
    # Jitter far above these is the clients' share of the 2 cores, not the server's.
    figures["server_tick_lateness_p95_ms"] = server_live.get("tick_lateness_p95_ms")
    figures["server_emit_p95_ms"] = server_live.get("emit_p95_ms")
    cpu = usage.cpu_share
    targets = [
        target("dashboard tick jitter P95", figures["jitter_p95_ms"], TARGET_JITTER_P95_MS, at_least=False, unit="ms"),
        target("dashboard server CPU", round(cpu, 4), TARGET_CPU_SHARE, at_least=False, unit="of one core"),
    ]
    rows = [
        {
            "scenario": f"dashboard {params['devices']:,} devices x {params['clients']} clients",
            "figure": (
                f"jitter P95 {figures['jitter_p95_ms']:.0f} ms (delivery P95 {figures['delivery_delay_p95_ms']:.0f} ms; "
                f"server: tick start P95 {_ms(figures['server_tick_lateness_p95_ms'])}, "
                f"emit P95 {_ms(figures['server_emit_p95_ms'])}), "
                f"server CPU {cpu:.0%} of a core, {figures['payload_bytes_per_tick']:,} B/tick, "
                f"RSS {usage.peak_rss_bytes / 2**20:.0f} MB"
            ),
            "baselines": "",
            "ratios": "",
            "target": f"jitter P95 <= {TARGET_JITTER_P95_MS:g} ms, CPU <= {TARGET_CPU_SHARE:.0%}",
            "met": all(item["met"] for item in targets),
        }
    ]
    return {"parameters": params, "figures": figures, "baselines": {}, "ratios": {}, "targets": targets, "rows": rows}


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _server_live_stats(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/api/health", timeout=5) as response:
            return dict(json.loads(response.read()).get("live") or {})
    except (OSError, ValueError):
        return {}


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connected": sum(result["connected"] for result in results),
        "receive_times": [times for result in results for times in result["receive_times"]],
        "server_times": [times for result in results for times in result["server_times"]],
        "payload_bytes": results[0]["payload_bytes"],
        "devices_per_tick": max(result["devices_per_tick"] for result in results),
        "disconnects": sum(result["disconnects"] for result in results),
    }


def _figures(received: dict[str, Any], interval_s: float) -> dict[str, Any]:
    jitter: list[float] = []
    delays: list[float] = []
    ticks = []
    for times, server_times in zip(received["receive_times"], received["server_times"], strict=True):
        steady = list(zip(times, server_times, strict=True))
        ticks.append(len(steady))
        jitter += [abs(b[0] - a[0] - interval_s) * 1000 for a, b in itertools.pairwise(steady)]
        delays += [(at - sent) * 1000 for at, sent in steady]
    jitter.sort()
    delays.sort()
    return {
        "clients_connected": received["connected"],
        "ticks_per_client_min": min(ticks) if ticks else 0,
        "ticks_per_client_max": max(ticks) if ticks else 0,
        "jitter_p50_ms": round(percentile(jitter, 50), 2),
        "jitter_p95_ms": round(percentile(jitter, 95), 2),
        "jitter_max_ms": round(jitter[-1], 2) if jitter else None,
        "delivery_delay_p95_ms": round(percentile(delays, 95), 2),
        "payload_bytes_per_tick": received["payload_bytes"],
        "devices_per_tick": received["devices_per_tick"],
        "disconnects": received["disconnects"],
    }


# --- the client process ----------------------------------------------------------------------


def run_clients(url: str, count: int, duration_s: float) -> dict[str, Any]:
    """Connect `count` Socket.IO clients over WebSocket and record `latest_data` events for `duration_s`.

    Prints READY once every client is connected, so the caller can start measuring the server then.
    """
    import socketio

    receive_times: list[list[float]] = [[] for _ in range(count)]
    server_times: list[list[float]] = [[] for _ in range(count)]
    sizes: list[int] = []
    devices: list[int] = []
    disconnects = [0]
    window = {"start": float("inf"), "stop": float("inf")}

    def make_handler(index: int) -> Any:
        def on_latest(data: dict[str, Any]) -> None:
            now = time.time()
            if not window["start"] <= now < window["stop"]:
                return
            receive_times[index].append(now)
            server_times[index].append(float(data.get("time") or 0.0))
            if index == 0:
                sizes.append(len(orjson.dumps(data)))
                devices.append(len(data.get("devices") or ()))

        return on_latest

    def on_disconnect(*_: Any) -> None:
        disconnects[0] += 1

    for index in range(count):
        # websocket-client checks UTF-8 in pure Python (~100 ns a byte, 20 ms for one 1,000-device tick)
        # unless told not to; a browser does it in C. Without this the clients, not the server, are measured.
        # Likewise the standard library's json decodes a 218 KB tick about 3x slower than a browser's JSON.parse;
        # orjson is closer to what the page pays.
        client = socketio.Client(
            reconnection=False, json=OrjsonCodec, websocket_extra_options={"skip_utf8_validation": True}
        )
        client.on(LIVE_EVENT, make_handler(index))
        client.on("disconnect", on_disconnect)
        client.connect(url, transports=["websocket"], wait_timeout=30)
    print("READY", flush=True)
    # The first event after connecting is the snapshot sent on connect, off the tick schedule.
    window["start"] = time.time() + WARMUP_S
    window["stop"] = window["start"] + duration_s
    time.sleep(WARMUP_S + duration_s)
    return {
        "connected": count,
        "receive_times": receive_times,
        "server_times": server_times,
        "payload_bytes": int(sorted(sizes)[len(sizes) // 2]) if sizes else 0,
        "devices_per_tick": max(devices) if devices else 0,
        "disconnects": disconnects[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_load")
    parser.add_argument("mode", choices=("clients",))
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("duration_s", type=float)
    args = parser.parse_args(argv)
    print(json.dumps(run_clients(args.url, args.count, args.duration_s)), flush=True)
    # Closing 50 WebSockets one by one takes seconds; the server sees the connections drop either way.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
