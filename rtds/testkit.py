"""Helpers for tests and benchmarks: waiting with a deadline, a witness subscriber, service processes.

They ship with the package (as Bytewax ships its testing helpers) so that `testing/` and `bench/`
drive the real services the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import PROJECT_ROOT, MosquittoBroker
from rtds.settings import Settings, env_name, load_settings

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05, message: str | Callable[[], str] = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout_s} s: {text or condition}")
        time.sleep(interval_s)


def puback_received(info: paho.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged this message.

    paho's `is_published()` raises for a message first queued while disconnected, even after paho sent
    it on reconnect and the PUBACK came; `_published` is the flag it would have returned.
    """
    try:
        return info.is_published()
    except RuntimeError:
        with info._condition:
            return info._published


def publish_all(
    host: str, port: int, messages: Iterable[tuple[str, bytes]], *, window: int = 500, timeout_s: float = 60.0
) -> list[paho.MQTTMessageInfo]:
    """Publish at QoS 1 from one client, at most `window` unacknowledged, and wait for every PUBACK.

    The window also keeps paho under its 65,535 outstanding messages, past which it refuses a publish
    (MQTT_ERR_QUEUE_SIZE).
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"publisher-{time.monotonic_ns()}")
    client.max_inflight_messages_set(window)
    client.connect(host, port)
    client.loop_start()
    infos: list[paho.MQTTMessageInfo] = []
    try:
        for topic, payload in messages:
            if len(infos) >= window:
                wait_until(lambda: puback_received(infos[-window]), timeout_s, interval_s=0.001, message="a PUBACK")
            info = client.publish(topic, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"paho refused a publish to {topic}: {paho.error_string(info.rc)}")
            infos.append(info)
        wait_until(lambda: all(puback_received(info) for info in infos), timeout_s, message="every PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return infos


def isolated_settings(folder: Path, broker: MosquittoBroker | None = None, **overrides: Any) -> Settings:
    """Settings that read no .env, keep every file under `folder` and, given a broker, point at it."""
    values: dict[str, Any] = {
        "sqlite_path": str(folder / "telemetry.db"),
        "dead_letter_path": str(folder / "dead_letters.db"),
        "device_queue_dir": str(folder / "queues"),
        "latency_data_path": str(folder / "latency_samples.json"),
        "dashboard_session_path": str(folder / "dashboard_sessions.db"),
    }
    if broker is not None:
        values.update(mqtt_broker_host=broker.host, mqtt_broker_port=broker.port)
    values.update(overrides)
    return load_settings(env_file=None, environ={}).with_overrides(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for field in fields(settings):
        value = getattr(settings, field.name)
        env[env_name(field.name)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Witness:
    """An independent MQTT subscriber that records everything it sees (auto-ack, clean session).

    With `client_id` and `clean_session=False` it keeps a persistent session, so the broker queues
    for it while it is away (a broker restart) and it misses nothing it had subscribed to.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Iterable[str] = ("#",),
        *,
        qos: int = 1,
        client_id: str | None = None,
        clean_session: bool = True,
        **client_kwargs: Any,
    ):
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = list(topics)
        self._qos = qos
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"witness-{os.getpid()}-{id(self)}",
            clean_session=clean_session,
        )
        if client_kwargs.get("username"):
            self.client.username_pw_set(client_kwargs["username"], client_kwargs.get("password"))
        if client_kwargs.get("tls"):
            client_kwargs["tls"](self.client)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, message="witness subscription acknowledged")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        client.subscribe([(topic, self._qos) for topic in self._topics])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain), time.time()))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Witness:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ServiceProcess:
    """One of our services as a child process (`python collector/mqtt_collector.py ...`), logging to a file."""

    def __init__(
        self,
        args: list[str],
        *,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.args = [sys.executable, *args]
        self.env = {**os.environ, **(settings_env(settings) if settings else {}), **(env or {})}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`. Returns the exit code."""
        return self._stop(signal.SIGTERM, timeout_s)

    def interrupt(self, timeout_s: float = 20.0) -> int | None:
        return self._stop(signal.SIGINT, timeout_s)

    def kill(self) -> int | None:
        return self._stop(signal.SIGKILL, 10.0)

    def _stop(self, sig: signal.Signals, timeout_s: float) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
