"""The collector's MQTT 3.1.1 packets, as bytes: what goes out, and how a read is split into packets."""

from __future__ import annotations

import struct

import pytest

from collector.mqtt_wire import (
    PINGRESP,
    SUBACK,
    ProtocolViolation,
    connect_packet,
    encode_remaining_length,
    parse_connack,
    parse_suback,
    puback_packets,
    read_packets,
    subscribe_packet,
)


def publish(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 1, dup: bool = False) -> bytes:
    """A PUBLISH as a broker sends it (MQTT 3.1.1 section 3.3), written out independently of the module."""
    body = struct.pack(">H", len(topic.encode())) + topic.encode()
    if qos:
        body += struct.pack(">H", packet_id)
    body += payload
    header = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes((header,)) + encode_remaining_length(len(body)) + body


@pytest.mark.parametrize(
    ("length", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01")],
)
def test_remaining_length_uses_the_specifications_examples(length: int, encoded: bytes) -> None:
    assert encode_remaining_length(length) == encoded


def test_connect_carries_a_persistent_session_login_and_keepalive() -> None:
    packet = connect_packet("collector", keepalive_s=30, clean_session=False, username="u", password="pw")
    assert packet == (
        b"\x10\x1c"  # CONNECT, 28 bytes follow
        b"\x00\x04MQTT\x04"  # protocol name and level 4 (3.1.1)
        b"\xc0"  # user name and password flags; clean session off
        b"\x00\x1e"  # keep-alive 30 s
        b"\x00\x09collector\x00\x01u\x00\x02pw"
    )
    anonymous = connect_packet("c", keepalive_s=5, clean_session=True)
    assert anonymous[9] == 0x02 and anonymous.endswith(b"\x00\x05\x00\x01c")


def test_subscribe_and_pubacks() -> None:
    assert subscribe_packet(1, ["device/data/+", "$share/g/x"], 1) == (
        b"\x82\x1f\x00\x01\x00\x0ddevice/data/+\x01\x00\x0a$share/g/x\x01"
    )
    assert puback_packets([1, 258, 65535]) == b"\x40\x02\x00\x01\x40\x02\x01\x02\x40\x02\xff\xff"
    assert puback_packets([]) == b""


def test_connack_and_suback() -> None:
    assert parse_connack(b"\x01\x00") == (True, 0)
    assert parse_connack(b"\x00\x05") == (False, 5)
    assert parse_suback(b"\x00\x01\x01\x80") == (1, [1, 0x80])
    with pytest.raises(ProtocolViolation):
        parse_connack(b"\x00")


def test_one_read_of_many_packets_splits_into_messages_in_order_with_controls_apart() -> None:
    big = bytes(range(256)) * 3  # a body over 127 bytes needs two length bytes
    data = (
        publish("device/data/v1", b'{"seq":1}', packet_id=7)
        + bytes((SUBACK, 3, 0, 1, 1))
        + publish("device/data/v2", big, packet_id=65535, dup=True)
        + publish("vehicle/speed/v3", b"", qos=0)
        + bytes((PINGRESP, 0))
    )
    deliveries, controls, used = read_packets(data, 1234.5, 3)
    assert used == len(data)
    assert deliveries == [
        ("device/data/v1", b'{"seq":1}', 1234.5, 7, 1, 3),
        ("device/data/v2", big, 1234.5, 65535, 1, 3),
        ("vehicle/speed/v3", b"", 1234.5, 0, 0, 3),
    ]
    assert controls == [(SUBACK, b"\x00\x01\x01"), (PINGRESP, b"")]


def test_a_packet_cut_anywhere_waits_for_the_rest() -> None:
    first = publish("device/data/v1", b"x" * 300, packet_id=1)
    second = publish("device/data/v2", b"y" * 5, packet_id=2)
    data = first + second
    for cut in range(len(first), len(data)):
        deliveries, _, used = read_packets(data[:cut], 0.0, 1)
        assert [d[3] for d in deliveries] == [1] and used == len(first)
    for cut in range(len(first)):
        deliveries, controls, used = read_packets(data[:cut], 0.0, 1)
        assert deliveries == [] and controls == [] and used == 0


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (publish("t", b"p", qos=2), "QoS 2"),
        (b"\x30\xff\xff\xff\xff\x01", "four bytes"),
        (b"\x32\x03\x00\x01t", "shorter than its topic"),
        (b"\x30\x01\x00", "cannot hold its topic length"),
    ],
)
def test_what_the_protocol_forbids_is_refused_by_name(data: bytes, problem: str) -> None:
    with pytest.raises(ProtocolViolation, match=problem):
        read_packets(data, 0.0, 1)
