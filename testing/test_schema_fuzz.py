"""parse_message against generated input: it returns a record or raises InvalidMessage, never anything else.

One message that makes the parser raise something unexpected would stay unacked in the broker and block the
collector's in-flight window for every device (issue 13), so the parser's only promise that matters under
attack is this one. Bytes of every kind, JSON documents built from the payload's own field names with values
of every type, and nesting far past any limit.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtds.errors import InvalidMessage
from rtds.schema import MEASUREMENT_FIELDS, REQUIRED_KEYS, TelemetryRecord, parse_message

NOW = 1_704_204_000.0
KEYS = (*REQUIRED_KEYS, *MEASUREMENT_FIELDS, "seq", "replayed", "detection_label", "telemetry", "detection")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

topics = st.one_of(
    st.just("device/data/vehicle_01"),
    st.just("vehicle/speed/vehicle_01"),
    st.builds(lambda rest: f"device/data/{rest}", st.text(max_size=30)),
    st.text(max_size=60),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.just("vehicle_01"),
    st.just(NOW),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), children, max_size=8),
    ),
    max_leaves=40,
)


def parses_or_refuses(topic: str, payload: bytes) -> None:
    try:
        record = parse_message(topic, payload, now=NOW)
    except InvalidMessage as exc:
        assert exc.reason and exc.detail
        return
    assert isinstance(record, TelemetryRecord)
    assert math.isfinite(record.timestamp) and math.isfinite(record.speed)


@FUZZ
@given(topics, st.binary(max_size=2_000))
def test_any_bytes(topic: str, payload: bytes) -> None:
    parses_or_refuses(topic, payload)


@FUZZ
@given(topics, documents)
def test_any_json_document(topic: str, document: Any) -> None:
    parses_or_refuses(topic, json.dumps(document, allow_nan=True).encode())


@FUZZ
@given(
    st.fixed_dictionaries(
        {"device_id": st.just("vehicle_01"), "timestamp": st.just(NOW), "speed": st.just(1.0)},
        optional={key: documents for key in KEYS if key not in REQUIRED_KEYS},
    )
)
def test_a_valid_reading_with_any_other_fields(document: dict[str, Any]) -> None:
    parses_or_refuses("device/data/vehicle_01", json.dumps(document, allow_nan=True).encode())


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=6_000), st.sampled_from(["[", '{"a":']), st.sampled_from(["", "speed"]))
def test_nesting_of_any_depth(depth: int, opener: str, where: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    if where:
        payload = f'{{"device_id": "vehicle_01", "timestamp": {NOW}, "speed": 1.0, "{where}x": {nested}}}'
    else:
        payload = nested
    parses_or_refuses("device/data/vehicle_01", payload.encode())
