"""Acking stored messages on the connection that delivered them, and only there.

A message id names a message only on its own connection. Every connection change (paho's
pre-connect, connect and disconnect callbacks) bumps an epoch under a lock, and a message is acked
only if it arrived in the current epoch. Otherwise its ack is dropped: after the reconnect the broker
delivers the message again, and the store's upsert on (device_id, time) makes the second write harmless.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as paho

from collector.counters import CollectorCounters


class Acknowledger:
    """Stored messages wait here until `send` acks them.

    The writer posts each stored batch. paho's thread sends the acks when its next message arrives; the
    writer sends them itself when it goes idle or starts waiting for the store. Acking from the writer
    while paho reads would hand the GIL back and forth on every ack (about 20 % more CPU per message).
    """

    def __init__(self, counters: CollectorCounters) -> None:
        self.epoch = 0  # changed only in paho's thread, which also reads it without the lock
        self.client: paho.Client | None = None
        self._counters = counters
        self._lock = threading.Lock()
        self._posted: deque[tuple[int, int, int]] = deque()  # (mid, qos, epoch)

    def connection_changed(self) -> None:
        with self._lock:
            self.epoch += 1

    def post(self, items: Iterable[tuple[Any, ...]]) -> None:
        """Messages now stored, as tuples ending in (mid, qos, epoch); QoS 0 messages need no ack."""
        self._posted.extend(item[-3:] for item in items if item[-2])

    @property
    def posted(self) -> bool:
        return bool(self._posted)

    def send(self) -> None:
        """Ack every posted message of the current connection; count the others as left for redelivery."""
        client = self.client
        if client is None:
            return
        with self._lock:
            epoch = self.epoch
            posted = self._posted
            stale = 0
            for _ in range(len(posted)):
                mid, qos, item_epoch = posted.popleft()
                if item_epoch == epoch:
                    client.ack(mid, qos)
                else:
                    stale += 1
            self._counters.left_for_redelivery += stale
