"""Scenario 4, dashboard: many devices in the store, many Socket.IO clients, one server process
(and `compare_processes`: the same clients on 1 process, then on 2 sharing their feed through Redis).

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
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError

from bench.harness import bench_settings, fresh_dir, ratio, start_broker, start_service, target
from bench.measurement import ResourceSampler, percentile
from bench.publishers import device_ids, make_payload
from dashboard.group import redis_client
from dashboard.live import OrjsonCodec
from rtds.broker import PROJECT_ROOT, free_port, port_open
from rtds.schema import data_topic, parse_message
from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

DASHBOARD_SCRIPT = "dashboard/app.py"
LIVE_EVENT = "latest_data"
FULL = {"devices": 1_000, "clients": 50, "client_processes": 5, "duration_s": 60.0}
QUICK = {"devices": 100, "clients": 5, "client_processes": 1, "duration_s": 6.0}
# compare_processes(): the same load on 1 process, then on 2 (an even number of client processes splits evenly).
COMPARE_FULL = {"devices": 1_000, "clients": 50, "client_processes": 4, "duration_s": 30.0}
COMPARE_QUICK = {"devices": 100, "clients": 10, "client_processes": 2, "duration_s": 6.0}
REDIS_URL = "redis://127.0.0.1:6379/0"
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
    settings = bench_settings(workdir, broker, dashboard_push_interval_s=1.0)
    params.update({"push_interval_s": settings.dashboard_push_interval_s, "transport": "websocket"})
    try:
        figures = _measure(workdir, settings, params, dashboards=1)
    finally:
        broker.kill()
    targets = _targets(figures)
    rows = [_row(f"dashboard {params['devices']:,} devices x {params['clients']} clients", figures, targets)]
    return {"parameters": params, "figures": figures, "baselines": {}, "ratios": {}, "targets": targets, "rows": rows}


def compare_processes(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """The same clients served by 1 dashboard process, then by 2 sharing their feed through Redis (half on each).

    Both runs use the same store, devices and client processes, one after the other in this call. The 2-process
    figures: jitter over every client of both, CPU of both processes together, the leader's tick start and emit.
    """
    params: dict[str, Any] = dict(COMPARE_QUICK if quick else COMPARE_FULL)
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    channel = f"rtds-bench-{uuid.uuid4().hex[:12]}"
    settings = bench_settings(workdir, broker, dashboard_push_interval_s=1.0)
    params.update(
        {"push_interval_s": settings.dashboard_push_interval_s, "transport": "websocket", "message_queue": REDIS_URL}
    )
    _check_redis(REDIS_URL)
    grouped = settings.with_overrides(dashboard_message_queue=REDIS_URL, dashboard_message_channel=channel)
    try:
        one = _measure(workdir / "one", settings, params, dashboards=1)
        two = _measure(workdir / "two", grouped, params, dashboards=2)
    finally:
        broker.kill()
        _forget_channel(REDIS_URL, channel)
    ratios = {
        "jitter_p95_2_vs_1": ratio(two["jitter_p95_ms"], one["jitter_p95_ms"]),
        "delivery_delay_p95_2_vs_1": ratio(two["delivery_delay_p95_ms"], one["delivery_delay_p95_ms"]),
        "server_cpu_2_vs_1": ratio(two["server"]["cpu_share_of_one_core"], one["server"]["cpu_share_of_one_core"]),
    }
    targets_one, targets_two = _targets(one), _targets(two)
    size = f"{params['devices']:,} devices x {params['clients']} clients"
    rows = [
        _row(f"dashboard 1 process, {size}", one, targets_one),
        _row(f"dashboard 2 processes through Redis, {size} (half on each)", two, targets_two),
    ]
    rows[1]["ratios"] = (
        f"jitter P95 {_times(ratios['jitter_p95_2_vs_1'])}, delivery P95 {_times(ratios['delivery_delay_p95_2_vs_1'])}, "
        f"server CPU {_times(ratios['server_cpu_2_vs_1'])} of 1 process"
    )
    return {
        "parameters": params,
        "figures": {"one_process": one, "two_processes": two},
        "baselines": {},
        "ratios": ratios,
        "targets": [{**item, "name": f"{item['name']} (1 process)"} for item in targets_one]
        + [{**item, "name": f"{item['name']} (2 processes)"} for item in targets_two],
        "rows": rows,
    }


def _measure(workdir: Path, settings: Settings, params: dict[str, Any], *, dashboards: int) -> dict[str, Any]:
    """`dashboards` dashboard processes on one store, params["clients"] Socket.IO clients split evenly over them."""
    workdir.mkdir(parents=True, exist_ok=True)
    writer = FleetWriter(str(workdir / "telemetry.db"), device_ids("dash_", params["devices"]))
    servers: list[tuple[ServiceProcess, str]] = []
    try:
        for index in range(dashboards):
            chosen = settings.with_overrides(sqlite_path=str(workdir / "telemetry.db"), flask_port=free_port())
            process = start_service(DASHBOARD_SCRIPT, chosen, workdir, f"dashboard-{index}")
            servers.append((process, f"http://{chosen.flask_host}:{chosen.flask_port}"))
            wait_until(
                lambda p=process, s=chosen: port_open(s.flask_host, s.flask_port) or not p.running(),
                30,
                message="the dashboard to listen",
            )
            if not process.running():
                raise RuntimeError(f"the dashboard exited: {process.log_text()[-2000:]}")
        writer.start()
        # Several client processes, so that decoding 50 payloads per tick in one interpreter does not
        # show up as the server's jitter; each dashboard gets the same share of clients and client processes.
        clients_per_server = _split(params["clients"], dashboards)
        processes_per_server = _split(max(params["client_processes"], dashboards), dashboards)
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.dashboard_load", "clients", url, str(count), str(params["duration_s"])],
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for (_, url), clients, parts in zip(servers, clients_per_server, processes_per_server, strict=True)
            for count in _split(clients, parts)
        ]
        # Measure the servers only once every client is connected and the first ticks went out.
        for process in processes:
            assert process.stdout is not None
            ready = process.stdout.readline().decode().strip()
            if ready != "READY":
                assert process.stderr is not None
                raise RuntimeError(
                    f"Socket.IO clients did not connect: {ready} {process.stderr.read().decode()[-2000:]}"
                )
        time.sleep(WARMUP_S)
        sampler = ResourceSampler([process.pid for process, _ in servers], interval_s=0.5).start()
        outputs = [process.communicate(timeout=params["duration_s"] + 120) for process in processes]
        usage = sampler.stop()
        for process, (_, stderr) in zip(processes, outputs, strict=True):
            if process.returncode != 0:
                raise RuntimeError(f"the Socket.IO clients failed: {stderr.decode(errors='replace')[-2000:]}")
        received = _merge([json.loads(stdout.decode().strip().splitlines()[-1]) for stdout, _ in outputs])
        server_live = [_server_live_stats(url) for _, url in servers]
    finally:
        for process, _ in servers:
            process.terminate()
        writer.stop()

    figures = _figures(received, settings.dashboard_push_interval_s)
    figures["server"] = usage.as_dict()
    figures["dashboard_processes"] = dashboards
    # The dashboards' own stop summaries say how long their slowest store read + payload build took.
    slowest = [re.search(r"slowest refresh (\d+) ms", process.log_text()) for process, _ in servers]
    figures["server_slowest_refresh_ms"] = max((int(found.group(1)) for found in slowest if found), default=None)
    # The server's own view of its last 120 ticks: how late each started and how long its emit took (in a
    # group, the leader's, which reads and emits; the others relay). Jitter far above these is the clients'
    # share of the 2 cores, not the server's.
    leader = next((live for live in server_live if (live.get("group") or {}).get("role") != "follower"), {})
    figures["server_tick_lateness_p95_ms"] = leader.get("tick_lateness_p95_ms")
    figures["server_emit_p95_ms"] = leader.get("emit_p95_ms")
    figures["store_reads_per_process"] = [live.get("ticks") for live in server_live]
    return figures


def _targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    cpu = figures["server"]["cpu_share_of_one_core"]
    return [
        target("dashboard tick jitter P95", figures["jitter_p95_ms"], TARGET_JITTER_P95_MS, at_least=False, unit="ms"),
        target("dashboard server CPU", cpu, TARGET_CPU_SHARE, at_least=False, unit="of one core"),
    ]


def _row(scenario: str, figures: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = figures["server"]["cpu_share_of_one_core"]
    return {
        "scenario": scenario,
        "figure": (
            f"jitter P95 {figures['jitter_p95_ms']:.0f} ms (delivery P95 {figures['delivery_delay_p95_ms']:.0f} ms; "
            f"server: tick start P95 {_ms(figures['server_tick_lateness_p95_ms'])}, "
            f"emit P95 {_ms(figures['server_emit_p95_ms'])}), "
            f"server CPU {cpu:.0%} of a core, {figures['payload_bytes_per_tick']:,} B/tick, "
            f"RSS {figures['server']['peak_rss_mb']:.0f} MB"
        ),
        "baselines": "",
        "ratios": "",
        "target": f"jitter P95 <= {TARGET_JITTER_P95_MS:g} ms, CPU <= {TARGET_CPU_SHARE:.0%}",
        "met": all(item["met"] for item in targets),
    }


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _check_redis(url: str) -> None:
    client = redis_client(url)
    try:
        client.ping()
    except RedisError as exc:
        raise RuntimeError(
            f"the 2-process run needs Redis at {url} ({exc}); start it, e.g. "
            "redis-server --daemonize yes --bind 127.0.0.1 --save '' --appendonly no"
        ) from None
    finally:
        client.close()


def _forget_channel(url: str, channel: str) -> None:
    client = redis_client(url)
    try:
        keys = list(client.scan_iter(match=f"{channel}:*"))
        if keys:
            client.delete(*keys)
    except RedisError:
        pass  # the keys expire on their own
    finally:
        client.close()


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
