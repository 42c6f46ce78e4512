"""The test and `rtds up` broker: a local mosquitto from the shipped config (rtds/broker.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rtds.broker import MosquittoBroker, PortTaken, port_open


def test_a_port_taken_before_mosquitto_binds_it_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    """free_port() releases the port it found; another process can take it before mosquitto binds."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = MosquittoBroker(tmp_path / "broker")
        broker.port = broker.ports[1883] = taken  # what free_port() returned, before the squatter came
        try:
            broker.start()
            assert broker.port != taken
            assert broker.running and port_open(broker.host, broker.port)
            assert f"Opening ipv4 listen socket on port {broker.port}." in broker.log_text()
        finally:
            broker.kill()


def test_a_port_the_caller_chose_is_not_replaced(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = MosquittoBroker(tmp_path / "broker", port=taken)
        with pytest.raises(PortTaken, match="Address already in use"):
            broker.start()
        assert broker.port == taken
