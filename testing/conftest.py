"""Shared fixtures: real Mosquitto brokers on free ports, settings for temporary folders, processes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtds.broker import SHIPPED_CONFIG, MosquittoBroker
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, isolated_settings

BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start mosquitto processes from our shipped configs; every one is stopped after the test."""
    brokers: list[MosquittoBroker] = []

    def start(template: Path = SHIPPED_CONFIG, *, name: str | None = None, **kwargs: object) -> MosquittoBroker:
        data_dir = tmp_path / (name or f"broker{len(brokers)}")
        broker = MosquittoBroker(data_dir, template=template, **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.kill()


@pytest.fixture
def broker(start_broker: BrokerFactory) -> MosquittoBroker:
    """A broker running the shipped docker/mosquitto/config/mosquitto.conf."""
    return start_broker()


@pytest.fixture
def settings(tmp_path: Path, broker: MosquittoBroker) -> Settings:
    """Settings pointing at the test's broker and at files under tmp_path; no .env is read."""
    return isolated_settings(
        tmp_path, broker, mqtt_client_id=f"collector-test-{tmp_path.name}", collector_summary_interval_s=5.0
    )


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start our services as child processes; all are killed after the test, whatever happened."""
    started: list[ServiceProcess] = []

    def spawn(
        *args: str, settings: Settings | None = None, name: str | None = None, **kwargs: object
    ) -> ServiceProcess:
        log_name = name or Path(args[0]).stem
        process = ServiceProcess(
            list(args), settings=settings, log_path=tmp_path / "logs" / f"{log_name}-{len(started)}.log", **kwargs
        )  # type: ignore[arg-type]
        started.append(process)
        return process.start()

    yield spawn
    for process in started:
        process.kill()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """A plain HTTP server (Python's http.server) on a free port: a service that is not MQTT where a broker may be looked for."""
    folder = tmp_path / "web"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: _QuietHandler(*args, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, name="web-server", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)
