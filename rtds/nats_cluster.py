"""nats-server processes with MQTT and JetStream for the tests and `rtds bench cluster`: one node, or a cluster
of several on loopback.

NATS keeps MQTT sessions, subscriptions and QoS 1 messages in JetStream streams, replicated across the
cluster (`stream_replicas`), so a client whose node dies resumes its persistent session on another node.
Each node has its own ports and store folder; everything is started here and killed by the fixture.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rtds.broker import free_port


def find_nats_server() -> str | None:
    for candidate in ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        path = shutil.which(candidate)
        if path:
            return path
    return None


@dataclass
class NatsNode:
    name: str
    folder: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        """The MQTT port, as MosquittoBroker.port is."""
        return self.mqtt_port

    @property
    def log_path(self) -> Path:
        return self.folder / "nats.log"

    def config(self, routes: list[int], replicas: int) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{self.folder / "jetstream"}" }}',
            # Sessions, subscriptions and QoS 1 messages live in JetStream, kept on `replicas` nodes.
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: {replicas} }}",
        ]
        if routes:
            route_urls = ", ".join(f"nats://127.0.0.1:{port}" for port in routes)
            lines.append(f"cluster {{ name: rtds, listen: 127.0.0.1:{self.cluster_port}, routes: [{route_urls}] }}")
        return "\n".join(lines) + "\n"

    def start(self, routes: list[int], replicas: int) -> None:
        program = find_nats_server()
        assert program, "nats-server is not installed (apt-get install nats-server)"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "nats.conf"
        config.write_text(self.config(routes, replicas))
        self.process = subprocess.Popen(
            [program, "-c", str(config), "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def listening(self) -> bool:
        if not self.running:
            return False
        assert self.process is not None
        try:
            sockets = psutil.Process(self.process.pid).net_connections(kind="inet")
        except psutil.Error:
            return False
        return self.mqtt_port in {sock.laddr.port for sock in sockets if sock.status == psutil.CONN_LISTEN}

    def jetstream_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as answer:
                return json.loads(answer.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def routed(self, others: int) -> bool:
        """Whether this node has routes to `others` nodes (a restarted node rejoins: its streams catch up later)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/routez", timeout=1) as answer:
                return int(json.loads(answer.read()).get("num_routes", 0)) >= others
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL: the node dies as a machine losing power would."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class NatsCluster:
    """`size` nats-server nodes routed to each other (one node: no cluster block)."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.nodes = [NatsNode(f"n{index}", folder / f"n{index}") for index in range(1, size + 1)]

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        size = len(self.nodes)
        routes = [node.cluster_port for node in self.nodes] if size > 1 else []
        for node in self.nodes:
            node.start(routes, replicas=min(size, 3))
        deadline = time.monotonic() + timeout_s
        while not all(node.listening() and node.jetstream_ready() for node in self.nodes):
            if time.monotonic() > deadline or not all(node.running for node in self.nodes):
                logs = "\n".join(node.log_text()[-1500:] for node in self.nodes)
                self.kill()
                raise RuntimeError(f"the NATS nodes did not become ready within {timeout_s} s:\n{logs}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def restart(self, node: NatsNode, timeout_s: float = 30.0) -> None:
        """Start a killed node again on its ports and store folder, and wait until it has rejoined the cluster."""
        node.start([other.cluster_port for other in self.nodes], replicas=min(len(self.nodes), 3))
        alive = sum(1 for other in self.nodes if other.running) - 1
        deadline = time.monotonic() + timeout_s
        while not (node.listening() and node.routed(alive)):
            if time.monotonic() > deadline or not node.running:
                raise RuntimeError(f"{node.name} did not rejoin within {timeout_s} s: {node.log_text()[-2000:]}")
            time.sleep(0.1)

    def fallback_hosts(self, first: NatsNode) -> str:
        """MQTT_BROKER_FALLBACK_HOSTS for a client whose first node is `first`: the others, in order."""
        index = self.nodes.index(first)
        others = self.nodes[index + 1 :] + self.nodes[:index]
        return ",".join(f"{node.host}:{node.mqtt_port}" for node in others)
