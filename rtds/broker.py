"""Running our own Mosquitto: the shipped config, rewritten for a local process.

`rtds up`, the benchmarks and the tests all start Mosquitto through `MosquittoBroker`, from the
configs in docker/mosquitto/config/, so what is tested is what ships.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Protocol

import psutil

from rtds.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "docker" / "mosquitto" / "config"
SHIPPED_CONFIG = CONFIG_DIR / "mosquitto.conf"
DEFAULTS_CONFIG = CONFIG_DIR / "mosquitto.defaults.conf"
CONTAINER_CONFIG_DIR = "/mosquitto/config"
CONTAINER_DATA_DIR = "/mosquitto/data"
SAVE_LOG_LINE = "Saving in-memory database"

INSTALL_HINTS = {
    "apt-get": "sudo apt-get install -y mosquitto mosquitto-clients",
    "dnf": "sudo dnf install -y mosquitto",
    "yum": "sudo yum install -y mosquitto",
    "pacman": "sudo pacman -S mosquitto",
    "apk": "sudo apk add mosquitto mosquitto-clients",
    "zypper": "sudo zypper install mosquitto",
    "brew": "brew install mosquitto",
}


def install_hint() -> str:
    """The command that installs Mosquitto on this system."""
    for tool, command in INSTALL_HINTS.items():
        if shutil.which(tool):
            return command
    return "install Mosquitto 2.x from https://mosquitto.org/download/ (or use --docker)"


def find_mosquitto() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        path = shutil.which(candidate)
        if path:
            return path
    raise ConfigError(f"the 'mosquitto' program is not installed; install it with: {install_hint()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def render_config(
    template: Path,
    *,
    ports: dict[int, int],
    data_dir: Path,
    config_dir: Path = CONFIG_DIR,
    bind: str = "127.0.0.1",
    extra_lines: tuple[str, ...] = (),
) -> str:
    """The template with its listeners moved to `ports` (shipped port -> local port) and its paths local."""
    lines: list[str] = []
    for line in template.read_text().splitlines():
        stripped = line.strip()
        match = re.match(r"^listener\s+(\d+)(\s+\S+)?(.*)$", stripped)
        if match:
            shipped = int(match.group(1))
            if shipped not in ports:
                raise ConfigError(f"{template.name} has a listener on {shipped}; give render_config a port for it")
            lines.append(f"listener {ports[shipped]} {bind}")
            continue
        if stripped.startswith("log_dest"):
            continue
        if stripped.startswith("user "):
            continue
        line = line.replace(CONTAINER_DATA_DIR, str(data_dir)).replace(CONTAINER_CONFIG_DIR, str(config_dir))
        lines.append(line)
    lines.append(f"log_dest file {data_dir / 'mosquitto.log'}")
    # As root, mosquitto would switch to the 'mosquitto' user, which cannot write our data folder.
    lines.append(f"user {getpass.getuser()}")
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


class BrokerAddress(Protocol):
    """Where an MQTT broker listens: a MosquittoBroker, or one node of a cluster (rtds.nats_cluster.NatsNode)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


PORT_RETRIES = 2


class PortTaken(RuntimeError):
    """Another process listens on a port mosquitto was to bind."""


class MosquittoBroker:
    """One local mosquitto process on its own port and data folder."""

    def __init__(
        self,
        data_dir: Path,
        *,
        template: Path = SHIPPED_CONFIG,
        port: int | None = None,
        extra_ports: dict[int, int] | None = None,
        config_dir: Path = CONFIG_DIR,
        extra_lines: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.template = template
        self.port = port or free_port()
        self.ports = {1883: self.port, **(extra_ports or {})}
        self._port_chosen_here = port is None
        self.config_dir = config_dir
        self.extra_lines = extra_lines
        self.config_path = self.data_dir / "mosquitto.conf"
        self.log_path = self.data_dir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start and wait until mosquitto itself listens on every port.

        A port picked by free_port() can be taken by another process before mosquitto binds it; then
        mosquitto exits with "Address already in use" and, when the port was picked here, a new one is
        tried (twice at most). A port the caller gave is the caller's to keep.
        """
        for _ in range(PORT_RETRIES):
            try:
                return self._start_once(timeout_s)
            except PortTaken:
                if not self._port_chosen_here:
                    raise
                self.port = self.ports[1883] = free_port()
        return self._start_once(timeout_s)

    def _start_once(self, timeout_s: float) -> MosquittoBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                self.template,
                ports=self.ports,
                data_dir=self.data_dir,
                config_dir=self.config_dir,
                extra_lines=self.extra_lines,
            )
        )
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                text = f"mosquitto exited with {self.process.returncode}: {error}{self.log_text()[-2000:]}"
                self._close_pipes()
                if "Address already in use" in text:
                    raise PortTaken(text)
                raise RuntimeError(text)
            # Its own listening sockets, not just open ports: another process may hold one of them.
            if set(self.ports.values()) <= self._listening_ports():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.ports} within {timeout_s} s: {self.log_text()[-2000:]}")

    def _listening_ports(self) -> set[int]:
        if self.process is None:
            return set()
        try:
            sockets = psutil.Process(self.process.pid).net_connections(kind="inet")
        except psutil.Error:
            return set()
        return {sock.laddr.port for sock in sockets if sock.status == psutil.CONN_LISTEN}

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its database and exits."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no chance to save; what survives is what autosave wrote."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            self._close_pipes()
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def wait_for_save(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker writes its database once more: a kill -9 keeps only what was saved."""
        saves = self.log_text().count(SAVE_LOG_LINE)
        deadline = time.monotonic() + timeout_s
        while self.log_text().count(SAVE_LOG_LINE) <= saves:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mosquitto did not save its database within {timeout_s} s: {self.log_text()[-2000:]}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
