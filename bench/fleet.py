"""Scenario 3, fleet: what simulated devices cost, in one process and one process per device.

(a) `python devices/run_devices.py --in-process --count N` at DEVICE_PUBLISH_INTERVAL_S=1: every
device with its own MQTT client and durable queue rows, in one process.
(b) `python devices/run_devices.py --count 10` (one process per device, as the seed runs them):
the children's RSS and CPU, extrapolated ×(N/10) to N devices, plus the supervisor once.

A counting subscriber (QoS 0, its own process-free paho thread) measures the achieved rate. The
window starts once it has heard from 95 % of the devices, so connecting is not measured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import bench_settings, fresh_dir, start_broker, start_service, target
from bench.measurement import ResourceSampler
from rtds.broker import MosquittoBroker
from rtds.schema import DATA_TOPIC_PREFIX
from rtds.testkit import ServiceProcess, wait_until

RUN_DEVICES = "devices/run_devices.py"
FULL = {"devices": 1_000, "duration_s": 60.0, "per_process_devices": 10, "per_process_duration_s": 30.0}
QUICK = {"devices": 100, "duration_s": 6.0, "per_process_devices": 10, "per_process_duration_s": 3.0}
PUBLISH_INTERVAL_S = 1.0
TARGET_RSS_MB = 500.0
TARGET_CPU_SHARE = 0.5
FLEET_SIZE_FOR_TARGETS = 1_000


class RateCounter:
    """Counts device messages and which devices were heard, over a resettable window."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages = 0
        self.devices: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet-counter")
        self.client.on_connect = lambda client, *_: client.subscribe(DATA_TOPIC_PREFIX + "+", qos=0)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, message="the counting subscriber to subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages += 1
            self.devices.add(message.topic)

    def reset(self) -> None:
        with self._lock:
            self.messages = 0

    def heard(self) -> int:
        with self._lock:
            return len(self.devices)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params: dict[str, Any] = dict(QUICK if quick else FULL)
    params["publish_interval_s"] = PUBLISH_INTERVAL_S
    workdir = fresh_dir(workdir)
    in_process = _measure(workdir / "in_process", params["devices"], params["duration_s"], in_process=True)
    per_process = _measure(
        workdir / "per_process", params["per_process_devices"], params["per_process_duration_s"], in_process=False
    )
    scale = FLEET_SIZE_FOR_TARGETS / params["per_process_devices"]
    per_process["extrapolated_to_devices"] = FLEET_SIZE_FOR_TARGETS
    per_process["extrapolated_rss_mb"] = round(
        per_process["children"]["mean_rss_mb"] * scale + per_process["supervisor"]["mean_rss_mb"], 1
    )
    per_process["extrapolated_cpu_share"] = round(
        per_process["children"]["cpu_share_of_one_core"] * scale + per_process["supervisor"]["cpu_share_of_one_core"],
        3,
    )
    # Judge the in-process fleet at 1,000 devices: measured when it ran 1,000, scaled linearly otherwise.
    fleet_scale = FLEET_SIZE_FOR_TARGETS / params["devices"]
    rss_at_target = round(in_process["process"]["mean_rss_mb"] * fleet_scale, 1) if fleet_scale != 1 else None
    rss = in_process["process"]["mean_rss_mb"] if fleet_scale == 1 else rss_at_target
    cpu = in_process["process"]["cpu_share_of_one_core"] * fleet_scale
    note = "" if fleet_scale == 1 else f" (measured at {params['devices']} devices, ×{fleet_scale:g})"
    targets = [
        target(f"fleet of 1,000 RSS{note}", rss, TARGET_RSS_MB, at_least=False, unit="MB"),
        target(f"fleet of 1,000 CPU{note}", round(cpu, 4), TARGET_CPU_SHARE, at_least=False, unit="of one core"),
    ]
    rows = [
        {
            "scenario": f"fleet {params['devices']:,} devices in one process",
            "figure": (
                f"RSS {in_process['process']['mean_rss_mb']:.0f} MB, CPU {in_process['process']['cpu_share_of_one_core']:.0%}"
                f" of a core, {in_process['achieved_msgs_per_s']:,.0f} msg/s of {in_process['expected_msgs_per_s']:,.0f}"
            ),
            "baselines": (
                f"one process per device: {per_process['children_per_device_rss_mb']:.0f} MB and "
                f"{per_process['children_per_device_cpu_share']:.1%} CPU each → 1,000 devices "
                f"{per_process['extrapolated_rss_mb'] / 1024:.1f} GB, {per_process['extrapolated_cpu_share']:.0%} CPU"
            ),
            "ratios": (
                f"RSS {per_process['extrapolated_rss_mb'] / max(rss or 1e-9, 1e-9):.0f}x smaller, "
                f"CPU {per_process['extrapolated_cpu_share'] / max(cpu, 1e-9):.1f}x less than per-process"
            ),
            "target": f"1,000 devices: RSS <= {TARGET_RSS_MB:g} MB, CPU <= {TARGET_CPU_SHARE:.0%}" + note,
            "met": all(item["met"] for item in targets),
        }
    ]
    return {
        "parameters": params,
        "figures": {"in_process": in_process},
        "baselines": {"one_process_per_device": per_process},
        "ratios": {
            "per_process_rss_over_in_process": round(per_process["extrapolated_rss_mb"] / rss, 2) if rss else None,
            "per_process_cpu_over_in_process": round(per_process["extrapolated_cpu_share"] / cpu, 2) if cpu else None,
        },
        "targets": targets,
        "rows": rows,
    }


def _measure(workdir: Path, devices: int, duration_s: float, *, in_process: bool) -> dict[str, Any]:
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    settings = bench_settings(
        workdir, broker, device_publish_interval_s=PUBLISH_INTERVAL_S, device_status_interval_s=3600.0
    )
    counter = RateCounter(broker)
    args = ["--count", str(devices), "--prefix", "fleet_"] + (["--in-process"] if in_process else [])
    fleet = start_service(RUN_DEVICES, settings, workdir, "run_devices", *args)
    try:
        started = time.monotonic()
        wait_until(
            lambda: counter.heard() >= 0.95 * devices or not fleet.running(),
            max(60.0, devices / 10),
            message=lambda: f"devices to publish (heard {counter.heard()} of {devices})",
        )
        if not fleet.running():
            raise RuntimeError(f"run_devices exited: {fleet.log_text()[-2000:]}")
        startup_s = time.monotonic() - started
        result = _sample(fleet, counter, duration_s, in_process=in_process)
        result.update(
            {
                "devices": devices,
                "devices_heard": counter.heard(),
                "startup_s": round(startup_s, 2),
                "expected_msgs_per_s": devices / PUBLISH_INTERVAL_S,
            }
        )
    finally:
        fleet.terminate(timeout_s=30)
        counter.close()
        broker.kill()
    result["exit_code"] = fleet.process.returncode if fleet.process else None
    return result


def _sample(fleet: ServiceProcess, counter: RateCounter, duration_s: float, *, in_process: bool) -> dict[str, Any]:
    if in_process:
        sampler = ResourceSampler([fleet.pid], interval_s=0.5).start()
        counter.reset()
        time.sleep(duration_s)
        received = counter.messages
        usage = sampler.stop()
        return {
            "achieved_msgs_per_s": round(received / usage.wall_s, 1),
            "process": usage.as_dict(),
        }
    children = [child.pid for child in psutil.Process(fleet.pid).children()]
    supervisor = ResourceSampler([fleet.pid], interval_s=0.5, descendants=False).start()
    devices = ResourceSampler(children, interval_s=0.5).start()
    counter.reset()
    time.sleep(duration_s)
    received = counter.messages
    child_usage = devices.stop()
    supervisor_usage = supervisor.stop()
    count = max(1, len(children))
    return {
        "achieved_msgs_per_s": round(received / child_usage.wall_s, 1),
        "children": child_usage.as_dict(),
        "supervisor": supervisor_usage.as_dict(),
        "children_per_device_rss_mb": round(child_usage.mean_rss_bytes / count / 2**20, 1),
        "children_per_device_cpu_share": round(child_usage.cpu_share / count, 4),
        "device_processes": len(children),
    }
