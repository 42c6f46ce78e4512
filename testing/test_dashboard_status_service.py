"""collector/device_status_api.py: the device status API on DEVICE_STATUS_PORT, as a real process.

It answers /api/devices/status with the same code as the dashboard's endpoint, so both processes,
over the same store and broker, list the same devices in the same states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from dashboard_fixtures import http_json, launch_dashboard, make_record, start_dashboard, write_records
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import MosquittoBroker
from rtds.schema import status_topic
from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

# Fields that depend on the moment of the request.
MOMENTARY = ("time", "seconds_since")


def start_status_service(spawn: Callable[..., ServiceProcess], settings: Settings) -> tuple[ServiceProcess, str]:
    def launch(port: int) -> ServiceProcess:
        return spawn("collector/device_status_api.py", "--port", str(port), settings=settings, name="status-api")

    process, url, _ = launch_dashboard(launch, None, health_path="/health")
    return process, url


def publish_retained_offline(broker: MosquittoBroker, device_id: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"will-{device_id}-{time.monotonic_ns()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(status_topic(device_id), b"offline", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def without_momentary(body: dict[str, Any]) -> dict[str, Any]:
    devices = [{k: v for k, v in device.items() if k not in MOMENTARY} for device in body["devices"]]
    return {**{k: v for k, v in body.items() if k not in MOMENTARY}, "devices": devices}


def test_the_status_service_answers_like_the_dashboard(
    settings: Settings, broker: MosquittoBroker, spawn: Callable[..., ServiceProcess]
) -> None:
    store = SQLiteStore(settings.sqlite_path)
    now = time.time()
    write_records(
        store,
        [
            make_record("vehicle_fresh", now - 1),
            make_record("vehicle_stale", now - 60),
            make_record("vehicle_gone", now - 1),
        ],
    )
    store.close()
    publish_retained_offline(broker, "vehicle_gone")  # its Last Will, retained

    service, url = start_status_service(spawn, settings)
    dashboard = start_dashboard(spawn, settings)
    expected = {"vehicle_fresh": "data", "vehicle_stale": "stale", "vehicle_gone": "status_offline"}

    def reasons(base: str) -> dict[str, str]:
        return {
            device["device_id"]: device["reason"] for device in http_json(base + "/api/devices/status")[1]["devices"]
        }

    wait_until(lambda: reasons(url) == expected, 10, message=lambda: f"{reasons(url)}")
    wait_until(lambda: reasons(dashboard.url) == expected, 10, message=lambda: f"{reasons(dashboard.url)}")
    status, body = http_json(url + "/api/devices/status")
    assert status == 200 and (body["total"], body["online"], body["offline"]) == (3, 1, 2)
    assert without_momentary(body) == without_momentary(http_json(dashboard.url + "/api/devices/status")[1])

    status, health = http_json(url + "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["store"]["ok"] is True and health["store"]["url"] == settings.sqlite_path
    assert health["broker"]["ok"] is True

    # Bad requests get the API's JSON answers.
    status, body = http_json(url + "/api/devices/status?device=vehicle_fresh")
    assert status == 400 and "unknown parameter 'device'" in body["error"]
    status, body = http_json(url + "/api/devices/vehicle_fresh/latest")
    assert status == 404 and set(body) == {"error"}

    # Without the broker, /health says so.
    broker.kill()
    wait_until(lambda: http_json(url + "/health")[0] == 503, 10)
    assert http_json(url + "/health")[1]["broker"]["ok"] is False

    assert service.terminate() == 0
    log = service.log_text()
    assert "device status at http://127.0.0.1" in log and "Traceback" not in log, log
    assert "device status service stopped after" in log and "requests" in log, log


def test_the_status_service_defaults_to_port_5001(settings: Settings) -> None:
    assert settings.device_status_port == 5001
