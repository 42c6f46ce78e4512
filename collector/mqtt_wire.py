"""MQTT 3.1.1 packets as bytes, for the collector's intake (collector/intake.py): no sockets, no clocks.

Only what a subscribe-only client needs: CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT and a QoS 0 PUBLISH out;
CONNACK, SUBACK, PUBLISH (QoS 0 and 1) and PINGRESP in. `read_packets` splits every complete packet
out of a buffer in one pass, so a 256 KiB read of a backlog becomes several hundred messages at once.
"""

from __future__ import annotations

import struct

# Packet types (the high nibble of the first byte).
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # SUBSCRIBE requires the flags 0010
SUBACK = 0x90
PINGREQ = bytes((0xC0, 0x00))
PINGRESP = 0xD0
DISCONNECT = bytes((0xE0, 0x00))
SUBACK_FAILURE = 0x80
MAX_REMAINING_LENGTH = 268_435_455  # four length bytes, the protocol's limit

# (topic, payload, received at (epoch seconds), packet id, QoS, connection number): what the collector buffers.
Delivery = tuple[str, bytes, float, int, int, int]
# (packet type with flags, body): every packet that is not a PUBLISH.
ControlPacket = tuple[int, bytes]


class ProtocolViolation(Exception):
    """The broker sent something MQTT 3.1.1 does not allow here; the connection is dropped and made anew."""


def encode_remaining_length(length: int) -> bytes:
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"an MQTT packet body of {length} bytes is over the protocol's limit")
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(encoded)


def _utf8_field(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"{text[:40]!r}... is longer than the 65,535 bytes an MQTT string may hold")
    return struct.pack(">H", len(data)) + data


def _binary_field(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def connect_packet(
    client_id: str, *, keepalive_s: int, clean_session: bool, username: str = "", password: str = ""
) -> bytes:
    flags = 0x02 if clean_session else 0x00
    payload = _utf8_field(client_id)
    if username:
        flags |= 0x80
        payload += _utf8_field(username)
        if password:
            flags |= 0x40
            payload += _binary_field(password.encode("utf-8"))
    body = _utf8_field("MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive_s) + payload
    return bytes((CONNECT,)) + encode_remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic_filters: list[str], qos: int) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(_utf8_field(topic) + bytes((qos,)) for topic in topic_filters)
    return bytes((SUBSCRIBE,)) + encode_remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (the collector's subscription probe: it needs no ack)."""
    body = _utf8_field(topic) + payload
    return bytes((PUBLISH,)) + encode_remaining_length(len(body)) + body


def puback_packets(packet_ids: list[int]) -> bytes:
    """One PUBACK per id, concatenated, for a single write."""
    return struct.pack(">" + "HH" * len(packet_ids), *[half for mid in packet_ids for half in (0x4002, mid)])


def parse_connack(body: bytes) -> tuple[bool, int]:
    """(session present, return code) of a CONNACK body."""
    if len(body) != 2:
        raise ProtocolViolation(f"a CONNACK must have 2 bytes after its header, not {len(body)}")
    return bool(body[0] & 0x01), body[1]


def parse_suback(body: bytes) -> tuple[int, list[int]]:
    """(packet id, the granted QoS per topic filter, 0x80 where refused) of a SUBACK body."""
    if len(body) < 3:
        raise ProtocolViolation(f"a SUBACK needs at least 3 bytes after its header, not {len(body)}")
    return (body[0] << 8) | body[1], list(body[2:])


def read_packets(data: bytes, received_at: float, connection: int) -> tuple[list[Delivery], list[ControlPacket], int]:
    """Split the complete packets at the front of `data`: (messages, other packets, bytes used).

    What is left after the bytes used is the start of a packet still arriving.
    """
    deliveries: list[Delivery] = []
    controls: list[ControlPacket] = []
    size = len(data)
    start = 0
    while size - start >= 2:
        header = data[start]
        length = 0
        shift = 0
        index = start + 1
        while True:
            if index >= size:
                return deliveries, controls, start
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolViolation("a packet's remaining length runs over four bytes")
        end = index + length
        if end > size:
            break
        if header & 0xF0 == PUBLISH:
            qos = (header >> 1) & 0x03
            if length < 2:
                raise ProtocolViolation(f"a PUBLISH of {length} bytes cannot hold its topic length")
            topic_end = index + 2 + ((data[index] << 8) | data[index + 1])
            if topic_end + (2 if qos else 0) > end:
                raise ProtocolViolation("a PUBLISH is shorter than its topic and packet id")
            topic = data[index + 2 : topic_end].decode("utf-8", "replace")
            if qos == 0:
                deliveries.append((topic, data[topic_end:end], received_at, 0, 0, connection))
            elif qos == 1:
                packet_id = (data[topic_end] << 8) | data[topic_end + 1]
                deliveries.append((topic, data[topic_end + 2 : end], received_at, packet_id, 1, connection))
            else:
                raise ProtocolViolation(f"the broker sent a PUBLISH at QoS {qos} on a QoS 1 subscription")
        else:
            controls.append((header, data[index:end]))
        start = end
    return deliveries, controls, start
