"""One settings object for every service.

Values come from the process environment, then from a `.env` file, then from the defaults
below; the environment wins. Every value is checked once, at start, and a bad one stops the
process with a sentence naming the variable and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from rtds.errors import ConfigError

EXAMPLE_SECRET_KEY = "dev-secret-key-change-in-production"
STORE_NAMES = ("sqlite", "influxdb")
DEVICE_TOPIC_MODES = ("primary", "both")
DEVICE_SYSTEM_METRICS_MODES = ("auto", "host", "simulated")
DURATION_PATTERN = re.compile(r"^(\d+)(ms|s|m|h|d)$")
REDIS_SCHEMES = ("redis", "rediss")
CHANNEL_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """'500ms', '10s', '5m', '16h', '7d' -> seconds. Raises ValueError with the accepted forms."""
    match = DURATION_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit, e.g. 500ms, 10s, 5m, 16h, 7d")
    return int(match.group(1)) * DURATION_UNITS_S[match.group(2)]


def duration_argument(text: str) -> float:
    """parse_duration_s as an argparse type: a bad duration is a usage error naming the accepted forms."""
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _port(text: str) -> int:
    value = _whole_number(text)
    if not 0 < value < 65536:
        raise ValueError(f"{value} is outside 1-65535")
    return value


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise ValueError(f"{value} must be a whole number above 0")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise ValueError(f"{value} must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise ValueError(f"{value} must be above 0")
    return value


# What a setting read by one of these parsers takes, said in an error instead of Python's own words;
# {unit} comes from the setting's name (_S, _MS, _MB, _BYTES).
_EXPECTED: dict[Callable[[str], Any], str] = {
    _port: "a port number 1-65535",
    _positive_int: "a whole number{unit} above 0",
    _non_negative_int: "a whole number{unit}, 0 or more",
    _positive_float: "a number{unit} above 0",
    _bool: "true or false (or 1/0, yes/no, on/off)",
}
_UNITS = {"_s": " of seconds", "_ms": " of milliseconds", "_mb": " of megabytes", "_bytes": " of bytes"}


def _choice(*names: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in names:
            raise ValueError(f"{text!r} is not one of: {', '.join(names)}")
        return value

    return parse


def _text(text: str) -> str:
    return text.strip()


def _broker_list(text: str) -> str:
    """'node2:1883, node3:1883' -> the same, checked; '' for none."""
    parse_broker_list(text)
    return ",".join(part.strip() for part in text.split(",") if part.strip())


def parse_broker_list(text: str) -> list[tuple[str, int]]:
    """'node2:1883,node3:1883' -> [("node2", 1883), ("node3", 1883)]. Raises ValueError with the expected form."""
    brokers = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port; list further brokers as host:port, comma-separated")
        brokers.append((host.strip("[]"), int(port)))
    return brokers


def _message_queue(text: str) -> str:
    """'' (one dashboard process) or a Redis URL, the only queue the dashboard group speaks."""
    value = text.strip()
    if value and (urlsplit(value).scheme not in REDIS_SCHEMES or not urlsplit(value).hostname):
        raise ValueError(
            "it is not a Redis URL; use redis://host:6379/0 (rediss:// for TLS), or leave it empty for one dashboard process"
        )
    return value


def _channel_name(text: str) -> str:
    value = text.strip()
    if not CHANNEL_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a channel name; use 1-64 letters, digits and . _ : -")
    return value


def _duration(text: str) -> str:
    parse_duration_s(text)
    return text.strip()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of every service. Build it with `load_settings()`."""

    # MQTT, as the seed names them
    mqtt_broker_host: str = "localhost"
    mqtt_broker_port: int = 1883
    mqtt_client_id: str = "mqtt-collector-python"
    mqtt_use_tls: bool = False
    mqtt_tls_insecure: bool = False
    mqtt_ca_certs: str = ""
    mqtt_certfile: str = ""
    mqtt_keyfile: str = ""
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_keepalive_s: int = 30
    # Further nodes of a broker cluster, "host:port,host:port": a client whose connection is lost (or never
    # made) goes to the next one and resumes its persistent session there.
    mqtt_broker_fallback_hosts: str = ""

    # Store
    store: str = "sqlite"
    sqlite_path: str = "data/telemetry.db"
    sqlite_synchronous: str = "full"
    dead_letter_path: str = "data/dead_letters.db"
    dead_letter_max_mb: float = 100.0
    influxdb_url: str = "http://localhost:8086"
    influxdb_url_fallback: str = ""
    influxdb_token: str = ""
    influxdb_org: str = "my-org"
    influxdb_bucket: str = "vehicle-data"
    influxdb_health_interval_s: float = 5.0
    influxdb_timeout_ms: int = 10_000

    # Collector
    collector_batch_size: int = 250
    collector_flush_interval_ms: int = 500
    collector_max_retries: int = 3
    collector_retry_interval_ms: int = 500
    collector_max_retry_delay_ms: int = 2_000
    collector_summary_interval_s: float = 30.0
    collector_shared_group: str = ""
    collector_workers: int = 1
    collector_max_payload_bytes: int = 65_536
    collector_max_clock_skew_s: float = 86_400.0

    # Devices
    device_publish_interval_s: float = 0.1
    device_queue_dir: str = "devices/queues"
    device_queue_max_messages: int = 10_000
    device_topics: str = "primary"
    device_count: int = 10
    device_prefix: str = "vehicle_"
    device_status_interval_s: float = 30.0
    # What a vehicle reports as its CPU, memory, disk and network: the host's readings, or its own simulated
    # on-board computer; auto: host for a lone `rtds device`, simulated for a fleet (`rtds devices`, `rtds up`).
    device_system_metrics: str = "auto"

    # Dashboard
    flask_host: str = "127.0.0.1"
    flask_port: int = 5000
    device_status_port: int = 5001  # collector/device_status_api.py, the seed's device status API
    # Empty: a random key per start (sessions end at a restart); login needs a real one.
    flask_secret_key: str = ""
    dashboard_offline_after_s: float = 10.0
    dashboard_push_interval_s: float = 1.0
    dashboard_username: str = ""
    dashboard_password_hash: str = ""
    dashboard_cors_origins: str = ""
    dashboard_rate_limit: str = "120/minute"
    # Secure session cookies: auto = when the request came over HTTPS (directly, or as a trusted proxy says).
    dashboard_secure_cookie: str = "auto"
    # How many reverse proxies in front of the dashboard to believe about X-Forwarded-For/-Proto/-Host (0: none).
    dashboard_trusted_proxies: int = 0
    # Where logout records that earlier sessions are over (shared by the dashboard processes of one host).
    dashboard_session_path: str = "data/dashboard_sessions.db"
    # Several dashboard processes (DEPLOYMENT.md): a Redis URL shared by all of them; empty = one process.
    dashboard_message_queue: str = ""
    # The Redis channel and key prefix of one group of dashboard processes (one per group on a shared Redis).
    dashboard_message_channel: str = "rtds-dashboard"

    # Monitoring
    latency_retention_duration: str = "10m"
    latency_collect_interval: int = 60
    latency_target_p95_ms: float = 2000.0
    latency_data_path: str = "data/latency_samples.json"

    log_level: str = "INFO"

    @property
    def mqtt_brokers(self) -> list[tuple[str, int]]:
        """MQTT_BROKER_HOST:MQTT_BROKER_PORT, then MQTT_BROKER_FALLBACK_HOSTS in their order."""
        return [(self.mqtt_broker_host, self.mqtt_broker_port), *parse_broker_list(self.mqtt_broker_fallback_hosts)]

    @property
    def login_enabled(self) -> bool:
        return bool(self.dashboard_username and self.dashboard_password_hash)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some values replaced (tests, CLI flags). Values are not re-parsed."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update(changes)
        return Settings(**values)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "mqtt_broker_port": _port,
    "mqtt_use_tls": _bool,
    "mqtt_tls_insecure": _bool,
    "mqtt_keepalive_s": _positive_int,
    "mqtt_broker_fallback_hosts": _broker_list,
    "store": _choice(*STORE_NAMES),
    "sqlite_synchronous": _choice("full", "normal"),
    "influxdb_health_interval_s": _positive_float,
    "influxdb_timeout_ms": _positive_int,
    "collector_batch_size": _positive_int,
    "collector_flush_interval_ms": _positive_int,
    "collector_max_retries": _non_negative_int,
    "collector_retry_interval_ms": _positive_int,
    "collector_max_retry_delay_ms": _positive_int,
    "collector_summary_interval_s": _positive_float,
    "collector_max_payload_bytes": _positive_int,
    "collector_workers": _positive_int,
    "collector_max_clock_skew_s": _positive_float,
    "dead_letter_max_mb": _positive_float,
    "device_publish_interval_s": _positive_float,
    "device_queue_max_messages": _positive_int,
    "device_topics": _choice(*DEVICE_TOPIC_MODES),
    "device_count": _positive_int,
    "device_status_interval_s": _positive_float,
    "device_system_metrics": _choice(*DEVICE_SYSTEM_METRICS_MODES),
    "flask_port": _port,
    "device_status_port": _port,
    "dashboard_offline_after_s": _positive_float,
    "dashboard_push_interval_s": _positive_float,
    "dashboard_secure_cookie": _choice("auto", "always", "never"),
    "dashboard_trusted_proxies": _non_negative_int,
    "dashboard_message_queue": _message_queue,
    "dashboard_message_channel": _channel_name,
    "latency_retention_duration": _duration,
    "latency_collect_interval": _positive_int,
    "latency_target_p95_ms": _positive_float,
    "log_level": _choice("debug", "info", "warning", "error"),
}


def env_name(attribute: str) -> str:
    return attribute.upper()


def expected_value(attribute: str) -> str | None:
    """'expected a whole number of seconds above 0, e.g. 30' for a numeric or true/false setting, else None."""
    parse = _PARSERS.get(attribute)
    if parse not in _EXPECTED:
        return None
    unit = next((text for suffix, text in _UNITS.items() if attribute.endswith(suffix)), "")
    expected = "expected " + _EXPECTED[parse].format(unit=unit)
    default = next(field.default for field in fields(Settings) if field.name == attribute)
    if isinstance(default, bool):
        return expected
    return f"{expected}, e.g. {default:g}" if isinstance(default, float) else f"{expected}, e.g. {default}"


def load_settings(
    env_file: str | os.PathLike[str] | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from `environ` (default: os.environ) over `env_file` over the defaults."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = merged.get(env_name(field.name))
        if raw is None:
            continue
        parse = _PARSERS.get(field.name, _text)
        try:
            values[field.name] = parse(raw)
        except ValueError as exc:
            problem = expected_value(field.name) or str(exc)
            raise ConfigError(
                f"{env_name(field.name)}={raw!r} is not valid: {problem}. Fix it in .env or the environment."
            ) from None
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.store == "influxdb" and not settings.influxdb_token:
        raise ConfigError(
            "STORE=influxdb needs INFLUXDB_TOKEN; set it in .env (docker compose prints it as DOCKER_INFLUXDB_INIT_ADMIN_TOKEN)."
        )
    if bool(settings.mqtt_certfile) != bool(settings.mqtt_keyfile):
        raise ConfigError("MQTT_CERTFILE and MQTT_KEYFILE go together; set both for a client certificate, or neither.")
    for key in ("mqtt_ca_certs", "mqtt_certfile", "mqtt_keyfile"):
        path = getattr(settings, key)
        if settings.mqtt_use_tls and path and not Path(path).is_file():
            raise ConfigError(f"{env_name(key)}={path!r} does not exist; point it at the file or leave it empty.")
    if settings.mqtt_password and not settings.mqtt_username:
        raise ConfigError("MQTT_PASSWORD is set but MQTT_USERNAME is empty; set the user name too.")
    if settings.collector_max_retry_delay_ms < settings.collector_retry_interval_ms:
        raise ConfigError("COLLECTOR_MAX_RETRY_DELAY_MS must be at least COLLECTOR_RETRY_INTERVAL_MS.")
