"""Static checks of the shipped deployment files, plus each Mosquitto config under a real mosquitto.

Telegraf's mapping is checked against rtds.schema (names and types) and against the Python parser's
own reading of flat and nested payloads. Compose and Cloudflare files are parsed as YAML and checked
for what DEPLOYMENT.md promises. No secret-looking value may be committed.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from rtds.broker import CONFIG_DIR, DEFAULTS_CONFIG, PROJECT_ROOT, SHIPPED_CONFIG, MosquittoBroker, free_port
from rtds.schema import (
    FIELD_TYPES,
    MEASUREMENT,
    MEASUREMENT_FIELDS,
    TAG_KEYS,
    TelemetryRecord,
    encode_payload,
    parse_message,
)
from rtds.settings import load_settings, parse_duration_s

SECURE_CONFIG = CONFIG_DIR / "mosquitto.secure.conf"
TELEGRAF_CONFIGS = (PROJECT_ROOT / "telegraf" / "telegraf.conf", PROJECT_ROOT / "telegraf" / "telegraf.nodocker.conf")
COMPOSE_FILE = PROJECT_ROOT / "docker" / "docker-compose.yml"
TELEGRAF_COMPOSE_FILE = PROJECT_ROOT / "docker" / "docker-compose.with-telegraf.yml"
COMPOSE_ENV_EXAMPLE = PROJECT_ROOT / "docker" / ".env.compose.example"
CLOUDFLARE_DIR = PROJECT_ROOT / "cloudflare"
NGINX_CONFIG = CLOUDFLARE_DIR / "nginx" / "rtds-dashboard.conf"
TYPE_NAMES = {float: "float", int: "int", bool: "bool"}
# The Python collector's own clock readings, which Telegraf cannot record (see telegraf.conf's header).
COLLECTOR_ONLY_FIELDS = {"collector_receive_time", "write_time"}

BrokerFactory = Callable[..., MosquittoBroker]


# --- Telegraf --------------------------------------------------------------------------------------


def load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def mqtt_input(config: dict[str, Any]) -> dict[str, Any]:
    (consumer,) = config["inputs"]["mqtt_consumer"]
    return consumer


def telegraf_fields(consumer: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(json path, stored name, type) of every json_v2 field."""
    (parser,) = consumer["json_v2"]
    return [(field["path"], field.get("rename", field["path"]), field.get("type", "")) for field in parser["field"]]


def max_inflight_messages(config: Path) -> int:
    match = re.search(r"^max_inflight_messages\s+(\d+)$", config.read_text(), re.MULTILINE)
    assert match, f"{config.name} sets no max_inflight_messages"
    return int(match.group(1))


def json_path(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for step in path.split("."):
        if not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def telegraf_point(consumer: dict[str, Any], topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What the json_v2 config extracts from one message: the simple dotted paths it uses, GJSON-style."""
    (parser,) = consumer["json_v2"]
    fields: dict[str, Any] = {}
    for path, name, kind in telegraf_fields(consumer):
        value = json_path(payload, path)
        if value is not None:
            fields[name] = {"float": float, "int": int, "bool": bool}[kind](value)
    tags = dict(consumer["tags"])
    for tag in parser.get("tag", []):
        value = json_path(payload, tag["path"])
        if value is not None:
            tags[tag.get("rename", tag["path"])] = value
    for rule in consumer["topic_parsing"]:
        pattern = rule["topic"].replace("+", "[^/]+")
        if re.fullmatch(pattern, topic):
            for name, level in zip(rule["tags"].split("/"), topic.split("/"), strict=True):
                if name != "_":
                    tags[name] = level
    return {"measurement": parser["measurement_name"], "tags": tags, "fields": fields, "time": payload["timestamp"]}


def full_record() -> TelemetryRecord:
    values: dict[str, Any] = {name: float(index + 1) for index, name in enumerate(MEASUREMENT_FIELDS)}
    values.update(device_id="vehicle_01", timestamp=time.time(), speed=61.5, seq=7, detection_label="car")
    values.update(replayed=True)
    return TelemetryRecord(**values)


def nested_form(flat: dict[str, Any], consumer: dict[str, Any]) -> dict[str, Any]:
    """The older nested payload, built from the nested paths Telegraf's config declares."""
    nested: dict[str, Any] = {key: flat[key] for key in ("device_id", "timestamp", "speed", "seq", "replayed")}
    (parser,) = consumer["json_v2"]
    paths = [(path, name) for path, name, _ in telegraf_fields(consumer) if "." in path]
    paths += [(tag["path"], tag.get("rename", tag["path"])) for tag in parser["tag"] if "." in tag["path"]]
    for path, name in paths:
        node = nested
        *parents, leaf = path.split(".")
        for step in parents:
            node = node.setdefault(step, {})
        node[leaf] = flat[name]
    return nested


@pytest.mark.parametrize("path", TELEGRAF_CONFIGS, ids=lambda p: p.name)
def test_telegraf_writes_the_collectors_measurement_tags_and_field_types(path: Path) -> None:
    config = load_toml(path)
    consumer = mqtt_input(config)
    (parser,) = consumer["json_v2"]
    assert consumer["data_format"] == "json_v2"
    assert parser["measurement_name"] == MEASUREMENT
    assert (parser["timestamp_path"], parser["timestamp_format"]) == ("timestamp", "unix")

    tags = set(consumer["tags"]) | {tag.get("rename", tag["path"]) for tag in parser["tag"]}
    tags |= {name for rule in consumer["topic_parsing"] for name in rule["tags"].split("/") if name != "_"}
    assert tags == set(TAG_KEYS)
    assert consumer["tags"]["collector"] == "telegraf"
    assert consumer["topic_tag"] == "", "a topic tag would split every device into a second series"

    stored = {name: kind for _, name, kind in telegraf_fields(consumer)}
    assert set(stored) == set(FIELD_TYPES) - COLLECTOR_ONLY_FIELDS
    for name, kind in stored.items():
        assert kind == TYPE_NAMES[FIELD_TYPES[name]], f"{name} is {kind} in {path.name}, {FIELD_TYPES[name]} in rtds"
    required = {name for _, name, _ in telegraf_fields(consumer)} - {
        field.get("rename", field["path"]) for field in parser["field"] if field.get("optional")
    }
    assert required == {"speed", "publish_timestamp"}, "speed and timestamp are required, as in rtds.schema"
    device_output, system_output = config["outputs"]["influxdb_v2"]
    assert device_output["namepass"] == [MEASUREMENT] and device_output["tagexclude"] == ["host"]
    assert system_output["namedrop"] == [MEASUREMENT]


@pytest.mark.parametrize("path", TELEGRAF_CONFIGS, ids=lambda p: p.name)
def test_telegraf_reads_flat_and_nested_payloads_on_both_topics_as_the_python_parser_does(path: Path) -> None:
    consumer = mqtt_input(load_toml(path))
    record = full_record()
    flat = record.to_payload()
    nested = nested_form(flat, consumer)
    for topic in (f"device/data/{record.device_id}", f"vehicle/speed/{record.device_id}"):
        for payload in (flat, nested):
            parsed = parse_message(topic, orjson_bytes(payload), now=record.timestamp)
            point = telegraf_point(consumer, topic, payload)
            expected_fields = {
                name: getattr(parsed, name) for name in FIELD_TYPES if getattr(parsed, name, None) is not None
            }
            expected_fields["publish_timestamp"] = parsed.timestamp
            assert point["fields"] == expected_fields, (topic, payload)
            assert point["tags"] == {
                "device_id": parsed.device_id,
                "detection_label": parsed.detection_label,
                "collector": "telegraf",
            }
            assert point["time"] == parsed.timestamp
    assert encode_payload(record) == orjson_bytes(flat)


def orjson_bytes(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


@pytest.mark.parametrize("path", TELEGRAF_CONFIGS, ids=lambda p: p.name)
def test_telegraf_delivers_at_least_once_and_fast_enough_for_the_online_window(path: Path) -> None:
    config = load_toml(path)
    consumer = mqtt_input(config)
    # Telegraf takes device ids from the topic (topic_parsing), so it subscribes one level deep only; a deeper
    # topic would not parse, and Telegraf acks and drops what does not parse anyway (DEPLOYMENT.md).
    assert sorted(consumer["topics"]) == ["device/data/+", "vehicle/speed/+"]
    assert consumer["qos"] == 1
    assert consumer["persistent_session"] is True
    assert consumer["client_id"], "a persistent session needs a fixed client id"
    for broker_config in (SHIPPED_CONFIG, SECURE_CONFIG):
        assert consumer["max_undelivered_messages"] == max_inflight_messages(broker_config)
    flush_s = parse_duration_s(config["agent"]["flush_interval"])
    assert flush_s <= 1.0 < load_settings(env_file=None, environ={}).dashboard_offline_after_s
    assert {"cpu", "mem", "disk", "net"} <= set(config["inputs"])
    assert consumer["password"].startswith("${") and config["outputs"]["influxdb_v2"][0]["token"].startswith("${")


def test_the_docker_variant_differs_from_the_other_only_by_the_docker_input_and_host_addresses() -> None:
    with_docker, without_docker = (load_toml(path) for path in TELEGRAF_CONFIGS)
    assert "docker" in with_docker["inputs"] and "docker" not in without_docker["inputs"]
    del with_docker["inputs"]["docker"]
    text = repr(with_docker).replace("tcp://mosquitto:1883", "tcp://127.0.0.1:1883")
    assert text.replace("http://influxdb:8086", "http://127.0.0.1:8086") == repr(without_docker)


# --- Compose ---------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return {**load_yaml(COMPOSE_FILE)["services"], **load_yaml(TELEGRAF_COMPOSE_FILE)["services"]}


def test_compose_runs_mosquitto_2_and_influxdb_2_7_with_healthchecks_volumes_and_log_rotation() -> None:
    compose = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2.0.22", "a patch release with the in-flight fixes"
    assert services["influxdb"]["image"] == "influxdb:2.7"
    assert set(compose["volumes"]) == {"mosquitto-data", "influxdb-data", "influxdb-config"}
    assert "mosquitto-data:/mosquitto/data" in services["mosquitto"]["volumes"]
    assert "./mosquitto/config:/mosquitto/config:ro" in services["mosquitto"]["volumes"]
    for name, service in compose_services().items():
        if name != "telegraf":
            assert service["healthcheck"]["test"], name
        options = service["logging"]["options"]
        assert {"max-size", "max-file"} <= set(options), name


def test_compose_publishes_ports_on_localhost_unless_told_otherwise() -> None:
    for name, service in compose_services().items():
        for port in service.get("ports", []):
            assert re.match(r"^\$\{[A-Z_]*BIND_ADDRESS:-127\.0\.0\.1\}:", port), f"{name} publishes {port}"


def test_compose_takes_every_secret_from_env_and_fails_loudly_without_it() -> None:
    example = COMPOSE_ENV_EXAMPLE.read_text()
    for path in (COMPOSE_FILE, TELEGRAF_COMPOSE_FILE):
        text = path.read_text()
        for variable in re.findall(r"\$\{([A-Z0-9_]+)", text):
            assert re.search(rf"^{variable}=", example, re.MULTILINE), f"{variable} is missing from {example}"
        for service in load_yaml(path)["services"].values():
            for key, value in service.get("environment", {}).items():
                if re.search(r"PASSWORD|TOKEN|SECRET", key):
                    assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{key}: {value}"


def test_the_compose_healthcheck_tells_a_running_broker_from_a_dead_one(
    start_broker: BrokerFactory, secure_config_dir: Path
) -> None:
    command = load_yaml(COMPOSE_FILE)["services"]["mosquitto"]["healthcheck"]["test"][1]

    def healthy(port: int) -> bool:
        local = command.replace("$$", "$").replace("-p 1883", f"-p {port}")
        return subprocess.run(["sh", "-c", local], timeout=10, check=False).returncode == 0

    development = start_broker(name="development")
    secure = start_broker(SECURE_CONFIG, name="secure", extra_ports={8883: free_port()}, config_dir=secure_config_dir)
    assert healthy(development.port)
    assert healthy(secure.port)
    assert not healthy(free_port())


# --- Mosquitto -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder as DEPLOYMENT.md steps 2-3 make it."""
    config_dir = tmp_path_factory.mktemp("config")
    shutil.copy(CONFIG_DIR / "acl", config_dir / "acl")
    scripts = PROJECT_ROOT / "docker" / "mosquitto"
    for command in (
        [scripts / "make_dev_certs.py", "--out", config_dir / "certs", "vehicle_01"],
        [scripts / "add_device.py", "vehicle_01", "--password-file", config_dir / "passwd"],
        [scripts / "add_device.py", "collector", "--password-file", config_dir / "passwd"],
    ):
        subprocess.run([sys.executable, *map(str, command)], check=True, capture_output=True, timeout=60)
    return config_dir


@pytest.mark.parametrize("template", [SHIPPED_CONFIG, DEFAULTS_CONFIG, SECURE_CONFIG], ids=lambda p: p.name)
def test_every_mosquitto_config_starts_under_a_real_mosquitto(
    template: Path, start_broker: BrokerFactory, secure_config_dir: Path
) -> None:
    listeners = {int(port) for port in re.findall(r"^listener (\d+)", template.read_text(), re.MULTILINE)}
    extra_ports = {port: free_port() for port in listeners - {1883}}
    broker = start_broker(template, name=template.stem, extra_ports=extra_ports, config_dir=secure_config_dir)
    assert broker.running
    assert "Error" not in broker.log_text(), broker.log_text()


def test_the_secure_config_keeps_the_persistence_and_queue_settings_of_the_shipped_one_word_for_word() -> None:
    def block(text: str) -> str:
        start = text.index("# Keep sessions")
        end = text.index("\n", text.index("persistent_client_expiration"))
        return text[start:end]

    assert block(SECURE_CONFIG.read_text()) == block(SHIPPED_CONFIG.read_text())
    secure_settings = settings_lines(SECURE_CONFIG)
    for line in settings_lines(SHIPPED_CONFIG) - {"listener 1883", "allow_anonymous true"}:
        assert line in secure_settings, line
    assert {"allow_anonymous false", "require_certificate true", "log_type debug"} <= secure_settings


def settings_lines(config: Path) -> set[str]:
    return {line.strip() for line in config.read_text().splitlines() if line.strip() and not line.startswith("#")}


# --- Cloudflare and systemd ------------------------------------------------------------------------


def cloudflare_configs() -> list[Path]:
    return sorted(CLOUDFLARE_DIR.glob("*.yml")) + sorted(CLOUDFLARE_DIR.glob("*.yaml"))


def test_every_cloudflare_ingress_list_ends_with_a_catch_all() -> None:
    configs = cloudflare_configs()
    assert len(configs) >= 2
    for path in configs:
        ingress = load_yaml(path)["ingress"]
        *rules, last = ingress
        assert set(last) == {"service"}, f"{path.name}: the last rule must match everything"
        assert last["service"].startswith("http_status:"), path.name
        for rule in rules:
            assert rule.get("hostname"), f"{path.name}: only the last rule may match every hostname"
            assert not rule["hostname"].endswith(":8086")
        services = {rule["hostname"].split(".")[0]: rule["service"] for rule in rules}
        assert services["influxdb"] == "http://127.0.0.1:8086", "InfluxDB goes out as an HTTPS hostname"
        assert services["dashboard"].startswith("http://127.0.0.1:")
        assert services["mqtt"] in ("tcp://127.0.0.1:8883", "http://127.0.0.1:9001")


def test_the_systemd_units_parse_and_run_what_the_guide_says() -> None:
    units = {path.name: path for path in (CLOUDFLARE_DIR / "systemd").glob("*.service")}
    assert {"cloudflared.service", "rtds-collector.service", "rtds-dashboard.service"} <= set(units)
    commands = {}
    for name, path in units.items():
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(path)
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), name
        commands[name] = parser["Service"]["ExecStart"]
    assert "-w 1 --threads 100 -b 127.0.0.1:5000 'dashboard.app:create_app()'" in commands["rtds-dashboard.service"]
    assert commands["rtds-collector.service"].endswith("collector/mqtt_collector.py")
    assert "access tcp" in commands["cloudflared-mqtt-access.service"]


def test_the_nginx_config_sticks_sessions_upgrades_websockets_and_matches_the_dashboard_units(
    tmp_path: Path,
) -> None:
    """cloudflare/nginx/rtds-dashboard.conf (testing/test_dashboard_group.py runs it in front of two dashboards)."""
    text = NGINX_CONFIG.read_text()
    directives = [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]
    assert "hash $rtds_client consistent;" in directives, "sticky sessions: long-polling must reach one process"
    assert "default $http_cf_connecting_ip;" in directives, "behind cloudflared the browser's address is in a header"
    for needed in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $rtds_connection;",
        "proxy_set_header Host $http_host;",
    ):
        assert needed in directives, needed
    listens = [line for line in directives if line.startswith("listen ")]
    assert listens == ["listen 127.0.0.1:5000;"], "nginx takes the tunnel's port, on localhost only"
    upstream_ports = re.findall(r"^server 127\.0\.0\.1:(\d+) ", "\n".join(directives), re.MULTILINE)
    assert len(upstream_ports) >= 2
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(CLOUDFLARE_DIR / "systemd" / "rtds-dashboard@.service")
    assert "-b 127.0.0.1:%i 'dashboard.app:create_app()'" in unit["Service"]["ExecStart"]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing; install it with: apt-get install -y nginx-light (as .ci/run does)")
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{ include {NGINX_CONFIG}; }}\n"
    )
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr


# --- No committed secrets --------------------------------------------------------------------------

PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
TOKEN_SHAPES = (
    re.compile(r"\bghp_[A-Za-z0-9]{36}\b"),  # GitHub
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\beyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    re.compile(r"\beyJhIjoi[A-Za-z0-9+/=]{40,}"),  # cloudflared tunnel token
    re.compile(r"[A-Za-z0-9_-]{80,}=="),  # InfluxDB API token
    re.compile(r"^[A-Za-z0-9_.-]+:\$7\$\d+\$", re.MULTILINE),  # a mosquitto_passwd entry
    re.compile(r"\b(?:scrypt|pbkdf2):[a-z0-9:]+\$[A-Za-z0-9]{8,}\$[0-9a-f]{32,}"),  # a Werkzeug password hash
)
# KEY=value, KEY: value or key = "value" where the key names a secret.
SECRET_ASSIGNMENT = re.compile(
    r"""(?P<key>[A-Za-z0-9_]*(?:password|passwd|token|secret|api_key|apikey)[A-Za-z0-9_]*)["']?\s*[:=]\s*(?P<value>.*)""",
    re.IGNORECASE,
)
# Public example values that documentation we vendor prints (InfluxDB's OpenAPI description).
PUBLIC_EXAMPLES = ("19aaaZZZGOvP2GGryXVT2qYftlFKu3bIopurM6AGFow1yF1abhtOlbHfsc",)
PLACEHOLDER_WORDS = ("change", "example", "placeholder", "your", "<", "test", "fake", "dummy", "xxx", "...")
CONFIG_SUFFIXES = {".env", ".example", ".yml", ".yaml", ".toml", ".conf", ".ini", ".cfg", ".service", ".sh"}
PROSE_SUFFIXES = {".md", ".txt", ".rst"}


def is_placeholder(value: str) -> bool:
    value = value.strip().strip("\"'`").strip()
    lowered = value.lower()
    return (
        not value or value.startswith(("${", "$(", "{", "%", "$")) or any(word in lowered for word in PLACEHOLDER_WORDS)
    )


def secret_findings(path: Path, text: str) -> Iterator[str]:
    """Private keys and token shapes anywhere; secret settings with real values outside the tests."""
    if PRIVATE_KEY.search(text):
        yield f"{path}: a private key"
    for shape in TOKEN_SHAPES:
        for match in shape.finditer(text):
            if not any(example in match.group(0) for example in PUBLIC_EXAMPLES):
                yield f"{path}: {match.group(0)[:24]}…"
    if path.parts[0] == "testing":
        return  # test fixtures carry throwaway credentials by design; keys and tokens are still checked above
    if path.suffix == ".py":
        kind = "python"
    elif path.suffix in PROSE_SUFFIXES:
        kind = "prose"
    elif path.suffix in CONFIG_SUFFIXES or path.name.startswith((".env", "env.")):
        kind = "config"
    else:
        return
    for number, line in enumerate(text.splitlines(), 1):
        for match in SECRET_ASSIGNMENT.finditer(line):
            key, value = match.group("key"), match.group("value").split(" #")[0].strip().rstrip(",;)")
            if kind == "python":
                literal = re.match(r"""^(["'])([^"'\n]*)\1""", value)
                if literal is None or len(literal.group(2)) < 8 or is_placeholder(literal.group(2)):
                    continue
            elif kind == "prose":
                # In prose only environment lines (KEY=value, nothing between) are settings.
                after = line[match.end("key") :]
                if not re.fullmatch(r"[A-Z0-9_]+", key) or not re.match(r"=[^\s`]", after) or is_placeholder(value):
                    continue
            elif is_placeholder(value):
                continue
            yield f"{path}:{number}: {key} = {value[:12]}…"


def committed_text_files() -> Iterator[Path]:
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        path = PROJECT_ROOT / name
        if path.is_file() and path.name != "uv.lock" and path.stat().st_size < 2_000_000:
            yield path


def test_no_secret_looking_value_is_committed() -> None:
    findings = []
    for path in committed_text_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue
        findings.extend(secret_findings(path.relative_to(PROJECT_ROOT), text))
    assert findings == []


def test_the_secret_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    key_header = "-----BEGIN " + "EC PRIVATE KEY-----"
    planted = {
        Path("docker/.env.compose.example"): "DOCKER_INFLUXDB_INIT_PASSWORD=hunter2hunter2\n",
        Path("DEPLOYMENT.md"): "```\nFLASK_SECRET_KEY=4f9c2a7d1e\n```\n",
        Path("testing/test_x.py"): "-----BEGIN " + "PRIVATE KEY-----\n",
        Path("telegraf/x.conf"): 'password = "s3cr3t-value"\n',
        Path("settings.py"): 'INFLUXDB_TOKEN = "q8Zr0bX2k9LmN4pVt7Ws"\n',
        Path("certs.md"): f"{key_header}\nMHcCAQEE\n",
        Path("passwd.txt"): "vehicle_01:$7$101$abcdefgh$ijkl\n",
    }
    for path, text in planted.items():
        assert list(secret_findings(path, text)), path
    allowed = {
        Path("docker/.env.compose.example"): "DOCKER_INFLUXDB_INIT_PASSWORD=\nINFLUXDB_TOKEN=your-token-here\n",
        Path("telegraf/x.conf"): 'password = "${TELEGRAF_MQTT_PASSWORD:?set it}"\n',
        Path("settings.py"): 'EXAMPLE_SECRET_KEY = "dev-secret-key-change-in-production"\nmqtt_password="wrong"\n',
        Path("tools.py"): 'connect(mqtt_password="", mqtt_client_id="anonymous-client")\n',
        Path(
            "DEPLOYMENT.md"
        ): "`INFLUXDB_TOKEN=` the admin token\nPassword: the one you chose\nMQTT_PASSWORD=<printed>\n",
        Path("testing/test_x.py"): 'PASSWORD = "correct horse battery staple"\n',
    }
    for path, text in allowed.items():
        assert not list(secret_findings(path, text)), path
