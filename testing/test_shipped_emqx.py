"""Static checks of the EMQX cluster files (docker/emqx/), which cannot run on this machine (no Docker engine).

The compose file parses with the three nodes, ports, volumes and secrets DEPLOYMENT.md describes; emqx.conf
keeps the limits of the shipped Mosquitto config; acl.conf has a counterpart for every rule of the Mosquitto
ACL, and the two files, each read with its broker's matching rules, decide alike on the same requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from test_shipped_configs import SECURE_CONFIG, load_yaml, max_inflight_messages, settings_lines

from rtds.broker import CONFIG_DIR, PROJECT_ROOT, SHIPPED_CONFIG
from rtds.settings import parse_duration_s

EMQX_DIR = PROJECT_ROOT / "docker" / "emqx"
EMQX_COMPOSE = EMQX_DIR / "docker-compose.cluster.yml"
EMQX_CONF = EMQX_DIR / "emqx.conf"
EMQX_ACL = EMQX_DIR / "acl.conf"
EMQX_ENV_EXAMPLE = EMQX_DIR / ".env.example"
MOSQUITTO_ACL = CONFIG_DIR / "acl"
NODES = ("emqx1", "emqx2", "emqx3")
BYTE_UNITS = {"": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def emqx_settings() -> dict[str, str]:
    """emqx.conf's `dotted.key = value` lines (the file keeps to that flat form so it can be read here)."""
    found = {}
    for line in EMQX_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            found[key] = value.strip('"')
    return found


def mosquitto_value(name: str) -> str:
    match = re.search(rf"^{name}\s+(\S+)$", SHIPPED_CONFIG.read_text(), re.MULTILINE)
    assert match, f"mosquitto.conf sets no {name}"
    return match.group(1)


def byte_size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]B)?", text).groups()  # type: ignore[union-attr]
    return int(number) * BYTE_UNITS[unit or ""]


# --- Compose -----------------------------------------------------------------------------------------


def test_the_compose_file_runs_three_named_nodes_with_their_own_data_and_the_shared_read_only_config() -> None:
    compose = load_yaml(EMQX_COMPOSE)
    services = compose["services"]
    assert set(services) == set(NODES)
    seeds = re.findall(r'"(emqx@[^"]+)"', emqx_settings()["cluster.static.seeds"])
    names = []
    for index, name in enumerate(NODES, 1):
        node = services[name]
        assert re.fullmatch(r"emqx/emqx:5\.8\.\d+", node["image"]), "the open-source line that clusters unlicensed"
        node_name = node["environment"]["EMQX_NODE_NAME"]
        host = node_name.split("@", 1)[1]
        assert node["hostname"] == host and host in node["networks"]["cluster"]["aliases"], name
        names.append(node_name)
        assert {
            "./emqx.conf:/opt/emqx/etc/emqx.conf:ro",
            "./acl.conf:/opt/emqx/etc/acl.conf:ro",
            "./certs:/opt/emqx/etc/certs:ro",
            f"emqx{index}-data:/opt/emqx/data",
        } == set(node["volumes"]), name
        assert node["healthcheck"]["test"] == ["CMD", "/opt/emqx/bin/emqx", "ctl", "status"]
        assert {"max-size", "max-file"} <= set(node["logging"]["options"])
        container_ports = {port.rsplit(":", 1)[1] for port in node["ports"]}
        assert {"1883", "8883"} <= container_ports, name
    assert names == seeds, "emqx.conf's static seeds are the compose file's node names"
    assert set(compose["volumes"]) == {f"{name}-data" for name in NODES}


def test_the_compose_file_publishes_on_localhost_unless_told_and_takes_every_secret_from_its_env_file() -> None:
    example = EMQX_ENV_EXAMPLE.read_text()
    for variable in re.findall(r"\$\{([A-Z0-9_]+)", EMQX_COMPOSE.read_text()):
        assert re.search(rf"^{variable}=", example, re.MULTILINE), f"{variable} is missing from {EMQX_ENV_EXAMPLE}"
    for name, node in load_yaml(EMQX_COMPOSE)["services"].items():
        for port in node["ports"]:
            assert re.match(r"^\$\{[A-Z_]*BIND_ADDRESS:-127\.0\.0\.1\}:", port), f"{name} publishes {port}"
        for key, value in node["environment"].items():
            if re.search(r"COOKIE|PASSWORD|TOKEN|SECRET|KEY", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name} {key}: {value}"


def test_every_emqx_file_says_plainly_that_it_was_not_run_here() -> None:
    for path in (EMQX_COMPOSE, EMQX_CONF, EMQX_ACL, EMQX_ENV_EXAMPLE):
        assert "NOT RUN HERE" in path.read_text(), path.name


# --- emqx.conf ------------------------------------------------------------------------------------------


def test_emqx_keeps_the_queue_and_session_limits_of_the_shipped_mosquitto_config() -> None:
    emqx = emqx_settings()
    assert int(emqx["mqtt.max_inflight"]) == max_inflight_messages(SHIPPED_CONFIG) == 10_000
    assert int(emqx["mqtt.max_mqueue_len"]) == int(mosquitto_value("max_queued_messages"))
    # A regular session's queue lives in its process heap: the heap bound must hold Mosquitto's byte cap.
    assert byte_size(emqx["force_shutdown.max_heap_size"]) >= int(mosquitto_value("max_queued_bytes"))
    payload_limit = int(mosquitto_value("message_size_limit"))
    assert payload_limit <= byte_size(emqx["mqtt.max_packet_size"]) <= payload_limit + 4096, "payload + headers"
    assert parse_duration_s(emqx["mqtt.session_expiry_interval"]) == parse_duration_s(
        mosquitto_value("persistent_client_expiration")
    )
    assert emqx["mqtt.shared_subscription"] == "true", "rtds collector --workers needs $share"
    for durable in ("durable_sessions.enable", "durable_storage.messages.replication_factor"):
        assert durable not in emqx, "durable sessions need the Enterprise image; they stay an option"
    assert "#durable_sessions.enable = true" in EMQX_CONF.read_text()


def test_emqx_identifies_devices_by_certificate_and_services_by_password_as_the_secure_mosquitto_config() -> None:
    emqx = emqx_settings()
    secure = settings_lines(SECURE_CONFIG)
    assert {"require_certificate true", "use_identity_as_username true", "use_username_as_clientid true"} <= secure
    tls = "listeners.ssl.default"
    assert emqx[f"{tls}.ssl_options.verify"] == "verify_peer"
    assert emqx[f"{tls}.ssl_options.fail_if_no_peer_cert"] == "true"
    assert emqx[f"{tls}.enable_authn"] == "false", "the certificate is a device's only credential"
    zone = emqx[f"{tls}.zone"]
    assert emqx[f"zones.{zone}.mqtt.peer_cert_as_username"] == emqx[f"zones.{zone}.mqtt.peer_cert_as_clientid"] == "cn"
    assert emqx["listeners.tcp.default.enable_authn"] == "true"
    assert "password_based" in emqx["authentication"] and "built_in_database" in emqx["authentication"]
    assert emqx["authorization.no_match"] == "deny"
    assert 'path = "etc/acl.conf"' in EMQX_CONF.read_text()
    assert emqx["listeners.ws.default.enable"] == emqx["listeners.wss.default.enable"] == "false"


# --- ACL ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosquittoRule:
    user: str | None  # None: a pattern, for every user
    access: str  # read, write, readwrite or deny
    topic: str


@dataclass(frozen=True)
class EmqxRule:
    permission: str  # allow or deny
    user: str | None  # None: all
    action: str  # publish, subscribe or all
    topics: tuple[str, ...]


def mosquitto_rules() -> list[MosquittoRule]:
    rules, user = [], None
    for line in MOSQUITTO_ACL.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            continue
        kind, *rest = words
        access, topic = rest if len(rest) == 2 else ("readwrite", rest[0])
        rules.append(MosquittoRule(None if kind == "pattern" else user, access, topic.replace("%u", "${username}")))
    return rules


EMQX_RULE = re.compile(r'^\{(allow|deny), (all|\{username, "([^"]+)"\}), (publish|subscribe|all), \[(.*)\]\}\.$')


def emqx_rules() -> list[EmqxRule]:
    rules = []
    for line in EMQX_ACL.read_text().splitlines():
        if not line.strip() or line.startswith("%%"):
            continue
        if line == "{deny, all}.":
            rules.append(EmqxRule("deny", None, "all", ("#",)))
            continue
        match = EMQX_RULE.match(line)
        assert match, f"acl.conf: a rule this test cannot read: {line}"
        permission, _, user, action, topics = match.groups()
        rules.append(EmqxRule(permission, user, action, tuple(re.findall(r'"([^"]+)"', topics))))
    return rules


def covers(rule: str, requested: str) -> bool:
    """Whether an ACL topic filter covers a topic or a subscription filter: a requested + is covered by + or #,
    a requested # only by #."""
    rule_levels, levels = rule.split("/"), requested.split("/")
    for index, word in enumerate(rule_levels):
        if word == "#":
            return True
        if index >= len(levels) or not (word == levels[index] or (word == "+" and levels[index] != "#")):
            return False
    return len(rule_levels) == len(levels)


def unshared(topic: str) -> str:
    return topic.split("/", 2)[2] if topic.startswith("$share/") else topic


def mosquitto_allows(user: str, action: str, topic: str) -> bool:
    """Mosquitto: any matching deny refuses; otherwise any grant allows. Shared filters are checked as the real topic."""
    access = "read" if action == "subscribe" else "write"
    mine = [rule for rule in mosquitto_rules() if rule.user in (None, user)]
    applicable = [rule for rule in mine if covers(rule.topic.replace("${username}", user), unshared(topic))]
    if any(rule.access == "deny" for rule in applicable):
        return False
    return any(access in rule.access for rule in applicable)


def emqx_allows(user: str, action: str, topic: str) -> bool:
    """EMQX: the first rule that matches the user, the action and the topic decides; none: no_match (deny)."""
    for rule in emqx_rules():
        if rule.user not in (None, user) or rule.action not in ("all", action):
            continue
        if any(covers(pattern.replace("${username}", user), topic) for pattern in rule.topics):
            return rule.permission == "allow"
    return emqx_settings()["authorization.no_match"] == "allow"


USERS = ("vehicle_01", "vehicle_02", "collector", "telegraf", "dashboard")


def requests() -> list[tuple[str, str, str]]:
    """Each user's publishes to every user's topics and subscriptions to every filter a service uses."""
    publishes = (
        [f"{kind}/{owner}" for owner in USERS for kind in ("device/data", "vehicle/speed", "device/status")]
        + [f"rtds/health/{owner}/check" for owner in USERS]
        + ["device/data/vehicle_01/extra", "anything/else"]
    )
    filters = ["device/#", "vehicle/speed/#", "device/data/+", "vehicle/speed/+", "device/status/+", "#"]
    filters += ["device/data/vehicle_01", "$share/rtds-collectors/device/#", "$share/rtds-collectors/vehicle/speed/#"]
    filters += [f"rtds/health/{owner}/#" for owner in USERS]
    return [(user, "publish", topic) for user in USERS for topic in publishes] + [
        (user, "subscribe", topic) for user in USERS for topic in filters
    ]


def test_every_mosquitto_acl_rule_has_its_emqx_counterpart() -> None:
    emqx = emqx_rules()
    for rule in mosquitto_rules():
        action = {"read": "subscribe", "write": "publish", "readwrite": "all", "deny": "all"}[rule.access]
        permission = "deny" if rule.access == "deny" else "allow"
        assert any(
            other.permission == permission
            and other.user == rule.user
            and other.action == action
            and rule.topic in other.topics
            for other in emqx
        ), f"no EMQX counterpart for {rule}"
    assert emqx[-1] == EmqxRule("deny", None, "all", ("#",)), "acl.conf ends by denying everything else"


@pytest.mark.parametrize("user", USERS)
def test_emqx_and_mosquitto_decide_alike_on_every_request_of_the_fleet_and_the_services(user: str) -> None:
    differences = [
        (action, topic, mosquitto_allows(user, action, topic))
        for who, action, topic in requests()
        if who == user and mosquitto_allows(user, action, topic) != emqx_allows(user, action, topic)
    ]
    assert differences == [], f"{user}: (action, topic, what Mosquitto decides) where EMQX decides otherwise"


def test_the_acl_model_tells_a_grant_from_a_denial() -> None:
    """The comparison above would pass for two files that allow nothing: check that it sees both answers."""
    assert mosquitto_allows("vehicle_01", "publish", "device/data/vehicle_01")
    assert not mosquitto_allows("vehicle_01", "publish", "device/data/vehicle_02")
    assert emqx_allows("collector", "subscribe", "$share/rtds-collectors/device/#")
    assert not emqx_allows("collector", "publish", "device/data/collector")
    assert not emqx_allows("vehicle_01", "subscribe", "device/data/vehicle_01")
    assert mosquitto_allows("collector", "subscribe", "$share/rtds-collectors/device/#")
