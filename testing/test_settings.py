"""Settings: .env under the environment, checked at start, every variable documented in the examples."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from rtds.broker import PROJECT_ROOT
from rtds.errors import ConfigError
from rtds.settings import Settings, env_name, load_settings, parse_duration_s

SEED_VARIABLES = [
    "INFLUXDB_URL",
    "INFLUXDB_URL_FALLBACK",
    "INFLUXDB_TOKEN",
    "INFLUXDB_ORG",
    "INFLUXDB_BUCKET",
    "MQTT_BROKER_HOST",
    "MQTT_BROKER_PORT",
    "MQTT_CLIENT_ID",
    "MQTT_USE_TLS",
    "MQTT_TLS_INSECURE",
    "MQTT_CA_CERTS",
    "MQTT_CERTFILE",
    "MQTT_KEYFILE",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "FLASK_HOST",
    "FLASK_PORT",
    "FLASK_SECRET_KEY",
    "LATENCY_RETENTION_DURATION",
    "LATENCY_COLLECT_INTERVAL",
]
EXAMPLES = (".env.example", "env.example.device", "env.example.vps1-docker")


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MQTT_BROKER_PORT=1999\nCOLLECTOR_BATCH_SIZE=100\nSTORE=sqlite\n")
    settings = load_settings(env_file, environ={"MQTT_BROKER_PORT": "2883"})
    assert settings.mqtt_broker_port == 2883
    assert settings.collector_batch_size == 100


def test_defaults_follow_the_seed() -> None:
    settings = load_settings(env_file=None, environ={})
    assert (settings.collector_batch_size, settings.collector_flush_interval_ms) == (250, 500)
    assert settings.collector_max_retries == 3
    # Not the seed's 5 s doubling to 30 s: a store back after a short outage must be written to within seconds.
    assert (settings.collector_retry_interval_ms, settings.collector_max_retry_delay_ms) == (500, 2_000)
    assert settings.influxdb_bucket == "vehicle-data"
    assert settings.influxdb_url_fallback == ""
    assert settings.device_publish_interval_s == 0.1
    assert settings.device_queue_max_messages == 10_000


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MQTT_BROKER_PORT": "eighty"}, "MQTT_BROKER_PORT"),
        ({"MQTT_BROKER_PORT": "70000"}, "MQTT_BROKER_PORT"),
        ({"STORE": "influx"}, "STORE"),
        ({"COLLECTOR_BATCH_SIZE": "0"}, "COLLECTOR_BATCH_SIZE"),
        ({"MQTT_USE_TLS": "maybe"}, "MQTT_USE_TLS"),
        ({"LATENCY_RETENTION_DURATION": "ten minutes"}, "LATENCY_RETENTION_DURATION"),
        ({"STORE": "influxdb"}, "INFLUXDB_TOKEN"),
        ({"MQTT_CERTFILE": "/tmp/x.crt"}, "MQTT_KEYFILE"),
        ({"DASHBOARD_MESSAGE_QUEUE": "amqp://guest@localhost//"}, "DASHBOARD_MESSAGE_QUEUE"),
        ({"DASHBOARD_MESSAGE_QUEUE": "redis://"}, "DASHBOARD_MESSAGE_QUEUE"),
        ({"DASHBOARD_MESSAGE_CHANNEL": "two words"}, "DASHBOARD_MESSAGE_CHANNEL"),
    ],
)
def test_a_bad_value_names_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env_file=None, environ=environ)


NOT_TEXT = [field.name for field in fields(Settings) if field.type != "str"]


@pytest.mark.parametrize("attribute", NOT_TEXT)
def test_a_number_or_switch_that_is_not_one_says_what_is_expected(attribute: str) -> None:
    name = env_name(attribute)
    default = next(field.default for field in fields(Settings) if field.name == attribute)
    wrong_values = ["maybe"] if isinstance(default, bool) else ["fast", "inf", "1e999", "-1"]
    for wrong in wrong_values:
        with pytest.raises(ConfigError) as caught:
            load_settings(env_file=None, environ={name: wrong})
        message = str(caught.value)
        # Python's own words ("invalid literal for int() with base 10") are no help to someone editing .env.
        assert message.startswith(f"{name}={wrong!r} is not valid: expected "), message
        assert message.endswith(". Fix it in .env or the environment."), message
        assert "int()" not in message and "float" not in message
    if isinstance(default, bool):
        assert "expected true or false" in message
        return
    example = re.search(r", e\.g\. (\S+)\. Fix it", message)
    assert example, message
    # The example given is a value the setting takes.
    assert getattr(load_settings(env_file=None, environ={name: example.group(1)}), attribute) == default


def test_durations() -> None:
    assert parse_duration_s("500ms") == 0.5
    assert parse_duration_s("5m") == 300
    assert parse_duration_s("16h") == 57_600
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s("5 minutes")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_variable_is_in_every_example(example: str) -> None:
    text = (PROJECT_ROOT / example).read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    expected = {env_name(field.name) for field in fields(Settings)} | set(SEED_VARIABLES)
    assert sorted(expected - listed) == []
    unknown = listed - expected
    assert sorted(unknown) == [], f"{example} lists variables no service reads"


def test_the_example_file_loads() -> None:
    settings = load_settings(PROJECT_ROOT / ".env.example", environ={})
    assert settings.store == "sqlite"


def test_a_service_stops_at_start_with_the_fix() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtds.cli", "collector"],
        env={"PATH": "/usr/bin:/bin", "STORE": "influx"},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "STORE='influx' is not valid" in result.stderr
    assert "Traceback" not in result.stderr
