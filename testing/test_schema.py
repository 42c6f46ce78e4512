"""The message schema: every parser case is a folder under testing/cases/parse/.

A folder holds `input.json` (the raw payload bytes, valid JSON or not, UTF-8 or not) or, for inputs too big
or too regular to keep as a file, `generated.json` (a list of [text, times]: the payload is each text
repeated that many times, in order); optionally `topic.txt` (default device/data/vehicle_01) and
`limits.json` (keyword arguments for parse_message); and either `expected.json` (the record's non-default
fields) or `expected.err` (the rejection reason). Adding a case adds a folder, not code. The clock is
fixed at NOW.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtds.errors import InvalidMessage
from rtds.schema import (
    DATA_SUBSCRIPTIONS,
    TelemetryRecord,
    data_topic,
    device_id_from_topic,
    encode_payload,
    is_valid_device_id,
    legacy_topic,
    parse_message,
    status_topic,
)

CASES_DIR = Path(__file__).parent / "cases" / "parse"
NOW = 1_704_204_000.0
DEFAULT_TOPIC = "device/data/vehicle_01"
REASONS = {
    "too_large",
    "not_json",
    "not_finite",
    "not_object",
    "bad_topic",
    "missing_field",
    "wrong_type",
    "bad_device_id",
    "device_id_mismatch",
    "timestamp_out_of_range",
    "too_deep",
}
# The catch-all for what no rule foresaw: no payload is known to reach it (the fuzz tests look for one).
UNFORESEEN = "parser_error"
CASES = sorted(path for path in CASES_DIR.iterdir() if path.is_dir())


def parse_case(folder: Path) -> TelemetryRecord:
    topic_file = folder / "topic.txt"
    topic = topic_file.read_text(encoding="utf-8").strip() if topic_file.exists() else DEFAULT_TOPIC
    limits_file = folder / "limits.json"
    limits: dict[str, Any] = json.loads(limits_file.read_text()) if limits_file.exists() else {}
    return parse_message(topic, case_input(folder), now=NOW, **limits)


def case_input(folder: Path) -> bytes:
    generated = folder / "generated.json"
    if generated.exists():
        return b"".join(text.encode() * times for text, times in json.loads(generated.read_text()))
    return (folder / "input.json").read_bytes()


def expected_record(folder: Path) -> dict[str, Any]:
    return asdict(TelemetryRecord(**json.loads((folder / "expected.json").read_text())))


@pytest.mark.parametrize("case", CASES, ids=[path.name for path in CASES])
def test_parse_case(case: Path) -> None:
    error_file = case / "expected.err"
    if error_file.exists():
        with pytest.raises(InvalidMessage) as raised:
            parse_case(case)
        assert raised.value.reason == error_file.read_text().strip(), raised.value.detail
        assert raised.value.detail
    else:
        assert asdict(parse_case(case)) == expected_record(case)


def test_every_case_has_one_expectation_and_every_reason_has_a_case() -> None:
    reasons = set()
    for case in CASES:
        expectations = [name for name in ("expected.json", "expected.err") if (case / name).exists()]
        assert len(expectations) == 1, f"{case.name} needs exactly one of expected.json / expected.err"
        inputs = [name for name in ("input.json", "generated.json") if (case / name).exists()]
        assert len(inputs) == 1, f"{case.name} needs exactly one of input.json / generated.json"
        if expectations == ["expected.err"]:
            reasons.add((case / "expected.err").read_text().strip())
    assert reasons == REASONS


def test_parser_docstring_lists_exactly_the_tested_reasons() -> None:
    documented = set(re.findall(r"[a-z_]+", parse_message.__doc__.split("Reasons:")[1]))
    assert documented == REASONS | {UNFORESEEN}


def test_flat_and_nested_payloads_give_the_same_record() -> None:
    flat = parse_case(CASES_DIR / "flat-seed-example")
    nested = parse_case(CASES_DIR / "nested-seed-example")
    assert flat == nested
    assert all(getattr(flat, name) is not None for name in ("cpu_usage", "memory_total", "network_bytes_recv"))


def test_encoded_record_parses_back_to_itself() -> None:
    record = parse_case(CASES_DIR / "flat-seed-example")
    record.seq = 7
    record.replayed = True
    assert parse_message(data_topic(record.device_id), encode_payload(record), now=NOW) == record


def test_the_default_size_limit_is_64_kib_inclusive() -> None:
    def payload_of(size: int) -> bytes:
        body = orjson.dumps({"device_id": "vehicle_01", "timestamp": NOW, "speed": 1.0, "pad": ""})
        return body[:-2] + b"x" * (size - len(body)) + b'"}'

    assert len(payload_of(65_536)) == 65_536
    assert parse_message(DEFAULT_TOPIC, payload_of(65_536), now=NOW).speed == 1.0
    with pytest.raises(InvalidMessage) as raised:
        parse_message(DEFAULT_TOPIC, payload_of(65_537), now=NOW)
    assert raised.value.reason == "too_large"


def test_the_default_clock_skew_is_one_day_either_way() -> None:
    for offset in (-86_400, 86_400):
        body = orjson.dumps({"device_id": "vehicle_01", "timestamp": NOW + offset, "speed": 1.0})
        assert parse_message(DEFAULT_TOPIC, body, now=NOW).timestamp == NOW + offset


def test_parsed_numbers_are_finite_floats() -> None:
    record = parse_case(CASES_DIR / "flat-seed-example")
    for name, value in asdict(record).items():
        if isinstance(value, float):
            assert math.isfinite(value), name
    assert isinstance(record.memory_total, float)


def test_topics() -> None:
    assert data_topic("vehicle_01") == "device/data/vehicle_01"
    assert legacy_topic("vehicle_01") == "vehicle/speed/vehicle_01"
    assert status_topic("vehicle_01") == "device/status/vehicle_01"
    assert DATA_SUBSCRIPTIONS == ("device/#", "vehicle/speed/#"), "deeper topics too, to dead-letter them"
    assert device_id_from_topic("vehicle/speed/x.1") == "x.1"
    assert device_id_from_topic("device/data/a/b") is None
    assert device_id_from_topic("elsewhere/a") is None


@pytest.mark.parametrize(
    ("device_id", "valid"),
    [
        ("vehicle_01", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("a b", False),
        ("a\n", False),
        (3, False),
    ],
)
def test_device_id_pattern(device_id: object, valid: bool) -> None:
    assert is_valid_device_id(device_id) is valid
