"""The collector: MQTT messages in, batches into the store, each message acked only after its batch is durable.

Three threads:
- the intake's thread (collector/intake.py) owns the MQTT connection. It hands over each read's
  messages as one list, which `on_messages` appends to a deque; it never parses, never logs per message,
  never waits on the store and never raises.
- one writer thread does group commit: it takes whatever is buffered, parses it in one tight loop (a
  refused message becomes its dead letter), writes it, then acks it. Parsing in the intake's thread
  instead, to overlap with SQLite's GIL-free steps, drained a backlog 5-15 % slower: each step then
  waited for the GIL.
  An idle writer writes a lone message at once; under load the next batch fills while the previous write
  runs, so no message waits for a timer and the broker's in-flight window cannot stall
  us. COLLECTOR_FLUSH_INTERVAL_MS bounds how long the writer sleeps when it sees nothing to do.
- a summary thread logs the counters every COLLECTOR_SUMMARY_INTERVAL_S.

Acks go out only after the store has the message, and only on the connection that delivered it
(`SubscriberSession.ack`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TypeVar

from collector.counters import CollectorCounters, describe
from collector.intake import SubscriberSession
from collector.mqtt_wire import SUBACK_FAILURE, Delivery
from collector.retry import Abandoned, Outage, Retrier, RetryPolicy
from rtds import mqtt
from rtds.errors import InvalidMessage, StoreRejected
from rtds.logs import RateLimitedLog
from rtds.schema import (
    DATA_SUBSCRIPTIONS,
    STATUS_TOPIC_PREFIX,
    TelemetryRecord,
    data_topic,
    encode_payload,
    health_topic,
    parse_message,
)
from rtds.settings import Settings
from rtds.store import StoreWriter
from rtds.store.deadletter import DeadLetter, DeadLetterStore

log = logging.getLogger(__name__)

COLLECTOR_NAME = "python"
SHUTDOWN_TIMEOUT_S = 8.0  # under Docker's default 10 s stop grace period
MIN_BUFFERED = 20_000  # above the shipped broker's in-flight window (10,000), so back-pressure is for other brokers
# Under load, batches start at least this far apart so they fill (group commit); a lone message is not delayed.
MIN_BATCH_SPACING_S = 0.002
NEVER = 1 << 62
# COLLECTOR_BATCH_SIZE is the size at which a batch is written without lingering, not a cap: when more is
# already buffered (a backlog), one batch takes up to this many times that. With SQLite's synchronous=FULL
# every transaction costs an fsync; 4,000-row transactions drained a backlog about 25 % faster than 1,000-row
# ones (bench/README.md). The broker's in-flight window (10,000 in the shipped config) bounds them anyway.
BACKLOG_BATCH_FACTOR = 16
# A broker that grants a shared subscription must deliver a message through it within this long.
SHARED_PROBE_TIMEOUT_S = 5.0

T = TypeVar("T")


def subscriptions(settings: Settings) -> tuple[str, ...]:
    """The data topics, as shared subscriptions when COLLECTOR_SHARED_GROUP is set."""
    group = settings.collector_shared_group
    return tuple(f"$share/{group}/{topic}" if group else topic for topic in DATA_SUBSCRIPTIONS)


def describe_store(settings: Settings) -> str:
    if settings.store == "sqlite":
        return f"SQLite at {settings.sqlite_path} (synchronous={settings.sqlite_synchronous})"
    return f"InfluxDB at {settings.influxdb_url}, bucket {settings.influxdb_bucket!r}"


class Collector:
    """Subscribe, batch, write, ack. `start()` returns at once; `stop()` drains, acks and disconnects."""

    def __init__(self, settings: Settings, store: StoreWriter, dead_letters: DeadLetterStore) -> None:
        self.settings = settings
        self.counters = CollectorCounters()
        self.topics = subscriptions(settings)
        self.retry_policy = RetryPolicy.from_settings(settings)
        self._store = store
        self._dead_letters = dead_letters
        self._batch_size = settings.collector_batch_size
        self._max_buffered = max(MIN_BUFFERED, 2 * BACKLOG_BATCH_FACTOR * settings.collector_batch_size)
        self._idle_wait_s = settings.collector_flush_interval_ms / 1000
        self._pending: deque[Delivery] = deque()
        self._max_payload_bytes = settings.collector_max_payload_bytes
        self._max_clock_skew_s = settings.collector_max_clock_skew_s
        self._wake = threading.Event()
        self._wake_at = NEVER  # on_messages wakes the writer once this many messages are buffered
        self._room = threading.Event()  # set by the writer each time it takes a batch
        self._accepting = True
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._subscribed = threading.Event()
        self.failed = threading.Event()  # the writer died of a bug; the process should exit and be restarted
        # Set when the broker takes the shared subscription but delivers nothing through it: no restart helps.
        self.broker_unsuitable = threading.Event()
        self._probe_topic = health_topic(settings.mqtt_username, f"{settings.mqtt_client_id}/shared-probe")
        self._probe_filter = f"$share/{settings.collector_shared_group}/{self._probe_topic}"
        self._probing = False
        self._connected_before = False
        self._subscribed_before = False
        self._warn = RateLimitedLog(log, 10.0)
        self._intake: SubscriberSession | None = None
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._in_hand = 0  # taken from a buffer by the writer, not yet acked
        self.unwritten = 0
        self._resync_when_caught_up = False
        self._retrier = Retrier(
            self.retry_policy,
            self.counters,
            stopping=self._stopping,
            abandon=self._abandon,
            buffered=lambda: self.buffered,
            ready=store.ready,
            on_recovered=self._store_recovered,
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        filters = (*self.topics, self._probe_filter) if settings.collector_shared_group else self.topics
        self._intake = SubscriberSession(settings, settings.mqtt_client_id, filters, self)
        self._started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._run_writer, name="collector-writer", daemon=True),
            threading.Thread(target=self._run_summary, name="collector-summary", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "collecting %s from %s as client %r into %s (batches of up to %d; dead letters in %s)",
            ", ".join(self.topics),
            " or ".join(f"{host}:{port}" for host, port in settings.mqtt_brokers),
            settings.mqtt_client_id,
            describe_store(settings),
            self._batch_size,
            settings.dead_letter_path,
        )
        self._intake.start()

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    @property
    def buffered(self) -> int:
        return len(self._pending) + self._in_hand

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop taking messages, write and ack what is buffered, disconnect, log the summary.

        Returns False when the store would not take the buffer within `timeout_s`; those messages were
        not acked, so the broker delivers them again to the next collector with this client id.
        """
        self._accepting = False
        self._stopping.set()
        self._wake.set()
        self._room.set()
        writer, summary = self._threads or (None, None)
        if writer is not None:
            writer.join(timeout_s)
            if writer.is_alive():
                self._abandon.set()
                writer.join()
        if self._intake is not None:
            self._intake.stop()
        if summary is not None:
            summary.join()
        self.unwritten = self.buffered
        if self.unwritten:
            log.warning(
                "stopped with %d messages not written (the store did not take them within %.0f s); they were "
                "not acknowledged, so the broker delivers them again when the collector restarts",
                self.unwritten,
                timeout_s,
            )
        elapsed_s = time.monotonic() - self._started_at
        log.info(
            "collector stopped after %.1f s: %s",
            elapsed_s,
            describe(self.counters.snapshot(), elapsed_s, buffered=self.unwritten),
        )
        return self.unwritten == 0 and not self.failed.is_set()

    # --- the intake's events (its thread; each catches everything, or the connection would drop) ----

    def on_messages(self, deliveries: list[Delivery]) -> None:
        if not self._accepting:
            return  # not acked: the broker delivers them again to the next session
        if self._probing:
            deliveries = self._take_probe(deliveries)
        try:
            self.counters.received += len(deliveries)
            pending = self._pending
            pending.extend(deliveries)
            buffered = len(pending)
            if buffered >= self._wake_at:
                self._wake.set()
            if buffered >= self._max_buffered:
                self._wait_for_room()
        except Exception:
            log.exception("unexpected error taking %d messages; they stay unacked", len(deliveries))

    def _wait_for_room(self) -> None:
        """Back-pressure: hold the intake's thread (so TCP pushes back on the broker) until the writer catches up."""
        self._warn.warning(
            "buffer_full",
            "%d messages buffered and not yet written; pausing intake until the store catches up",
            len(self._pending),
        )
        while len(self._pending) >= self._max_buffered and self._accepting:
            self._room.clear()
            if len(self._pending) >= self._max_buffered:
                self._room.wait(0.1)

    def on_connected(self, session_present: bool) -> None:
        host, port = self._intake.broker if self._intake is not None else self.settings.mqtt_brokers[0]
        where = f"{host}:{port}"
        if self._connected_before and not session_present:
            log.warning(
                "reconnected to %s but the broker had no session for %r: messages published while we were "
                "away are lost (is persistence on, and did the broker shut down cleanly?)",
                where,
                self.settings.mqtt_client_id,
            )
        else:
            log.info("connected to %s (session present: %s)", where, session_present)
        self._connected_before = True

    def on_refused(self, return_code: int) -> None:
        log.error("the broker refused the connection: %s", mqtt.explain_connect_failure(return_code))

    def on_unreachable(self, reason: str) -> None:
        self._warn.warning(
            "connect_fail",
            "%s; retrying",
            reason,
        )

    def on_lost(self, reason: str, acks_unsent: int) -> None:
        self._subscribed.clear()
        self.counters.left_for_redelivery += acks_unsent
        if not self._stopping.is_set():
            log.warning(
                "lost the connection to the broker (%s); reconnecting. Messages not yet acked will be delivered again",
                reason,
            )

    def on_subscribed(self, granted_qos: list[int]) -> None:
        if SUBACK_FAILURE in granted_qos:
            log.error(
                "the broker refused the subscription to %s (granted %s); check the broker's ACL for this user",
                ", ".join(self.topics),
                granted_qos,
            )
            return
        log.info("subscribed to %s at QoS 1", ", ".join(self.topics))
        if self.settings.collector_shared_group and not self._probing and not self._subscribed_before:
            self._start_probe()
        self._subscribed_before = True
        self._subscribed.set()

    # --- the shared-subscription probe (its thread, and a timer) --------------------------------------

    def _start_probe(self) -> None:
        """A broker may grant `$share/...` and never deliver through it (nats-server 2.9 does): one message of
        our own through the group must come back, or the collector stops with a sentence saying why."""
        assert self._intake is not None
        self._probing = True
        self._intake.publish(self._probe_topic, b"shared subscription probe")
        timer = threading.Timer(SHARED_PROBE_TIMEOUT_S, self._probe_timed_out)
        timer.daemon = True
        timer.start()

    def _take_probe(self, deliveries: list[Delivery]) -> list[Delivery]:
        rest = [delivery for delivery in deliveries if delivery[0] != self._probe_topic]
        if len(rest) < len(deliveries):
            self._probing = False
            log.info(
                "the broker delivers through the shared subscription group %r", self.settings.collector_shared_group
            )
            if self._intake is not None:
                self._intake.ack([delivery for delivery in deliveries if delivery[0] == self._probe_topic])
        return rest

    def _probe_timed_out(self) -> None:
        if not self._probing:
            return
        host, port = self._intake.broker if self._intake is not None else self.settings.mqtt_brokers[0]
        log.error(
            "the broker at %s:%d accepted the shared subscription %s but delivered nothing through it within %g s: "
            "it does not support MQTT shared subscriptions (nats-server does not, for one). Run one collector "
            "(COLLECTOR_WORKERS=1, COLLECTOR_SHARED_GROUP empty), or use a broker that supports them "
            "(Mosquitto 2, EMQX, HiveMQ, VerneMQ; DEPLOYMENT.md lists them)",
            host,
            port,
            self._probe_filter,
            SHARED_PROBE_TIMEOUT_S,
        )
        self.broker_unsuitable.set()

    # --- the writer thread ----------------------------------------------------------------

    def _run_writer(self) -> None:
        batch_started = 0.0
        try:
            while True:
                if self._resync_when_caught_up and not self._pending:
                    self._resync_after_outage()
                if self._pending:
                    # Writing at once is right for a lone message; a stream arriving as fast as we write
                    # would otherwise be written one or two records at a time, each a thread hand-off.
                    linger_s = batch_started + MIN_BATCH_SPACING_S - time.monotonic()
                    if linger_s > 0 and len(self._pending) < self._batch_size and not self._stopping.is_set():
                        self._wait_for(self._batch_size, linger_s)
                    batch_started = time.monotonic()
                    batch = _take(self._pending, BACKLOG_BATCH_FACTOR * self._batch_size)
                    self._room.set()
                    self._in_hand = len(batch)
                    self._write_batch(batch)
                    self._in_hand = 0
                elif self._stopping.is_set():
                    return
                else:
                    self._wait_for(1, self._idle_wait_s)
        except Abandoned:
            return
        except Exception:
            log.exception("the collector's writer failed; stopping (what it held is unacked and will be redelivered)")
            self.failed.set()

    def _store_recovered(self, outage: Outage) -> None:
        self._resync_when_caught_up = self._intake is not None

    def _resync_after_outage(self) -> None:
        """Everything that waited through the outage is stored and acked: open the MQTT session once more.

        A broker can hold messages of a live session without sending them until the client reconnects
        (Mosquitto before 2.0.13 was seen to; README "When the store goes away"). Reconnecting costs a few
        milliseconds, and the broker then resends whatever it still holds, so nothing waits for a restart.
        """
        self._resync_when_caught_up = False
        if self._intake is not None and not self._stopping.is_set():
            log.info("caught up after the store outage; reconnecting once so the broker resends anything it holds")
            self._intake.resync()

    def _wait_for(self, count: int, timeout_s: float) -> None:
        """Sleep until `count` messages are buffered, stop() is called, or the timeout."""
        self._wake_at = count
        if len(self._pending) < count and not self._stopping.is_set():
            self._wake.wait(timeout_s)
        self._wake_at = NEVER
        self._wake.clear()

    def _write_batch(self, batch: list[Delivery]) -> None:
        records, letters, parsed = self._parse(batch)
        refused = self._store_records(records) if records else []
        if refused:
            now = time.time()
            letters += [
                DeadLetter(now, "store_rejected", detail, data_topic(record.device_id), encode_payload(record))
                for record, detail in refused
            ]
            self.counters.count_rejected("store_rejected", len(refused))
            self._warn.warning("store_rejected", "the store refused %d records: %s", len(refused), refused[0][1])
        if letters:
            evicted = self._retrier.run(lambda: self._dead_letters.add(letters), what="dead letters")
            self.counters.dead_lettered += len(letters)
            if evicted:
                self.counters.dead_letters_evicted += evicted
                self._warn.warning(
                    "dead_letters_evicted",
                    "the dead-letter file %s is at its cap (DEAD_LETTER_MAX_MB=%g): deleted its %d oldest letters",
                    self.settings.dead_letter_path,
                    self.settings.dead_letter_max_mb,
                    evicted,
                )
        if self._intake is not None:
            self.counters.left_for_redelivery += self._intake.ack(parsed)

    def _parse(self, deliveries: list[Delivery]) -> tuple[list[TelemetryRecord], list[DeadLetter], list[Delivery]]:
        """(records, dead letters for the messages refused, the messages to ack once both are stored).

        Every message is in the last list: its content can make it a record, a dead letter or (on
        device/status/<id>, presence that the subscription to device/# also brings) nothing to keep, but it
        can never keep it from being acked.
        """
        records: list[TelemetryRecord] = []
        letters: list[DeadLetter] = []
        max_payload_bytes = self._max_payload_bytes
        max_clock_skew_s = self._max_clock_skew_s
        for delivery in deliveries:
            topic, payload, received_at = delivery[0], delivery[1], delivery[2]
            try:
                record = parse_message(
                    topic,
                    payload,
                    now=received_at,
                    max_payload_bytes=max_payload_bytes,
                    max_clock_skew_s=max_clock_skew_s,
                )
            except InvalidMessage as exc:
                if exc.reason == "bad_topic" and topic.startswith(STATUS_TOPIC_PREFIX):
                    self.counters.presence += 1
                    continue
                self.counters.count_rejected(exc.reason)
                self._warn.warning(exc.reason, "rejected a message on %r: %s", topic[:200], exc)
                letters.append(DeadLetter(received_at, exc.reason, exc.detail, topic, bytes(payload)))
            else:
                record.collector_receive_time = received_at
                records.append(record)
        return records, letters, deliveries

    def _store_records(self, records: Sequence[TelemetryRecord]) -> list[tuple[TelemetryRecord, str]]:
        """Write the records, retrying while the store is unavailable; return those it refused, with why.

        A refused batch is split in halves until the refused records are alone, so one bad record
        does not send 249 good ones to the dead-letter table.
        """
        try:
            self._retrier.run(lambda: self._timed_write(records), what=f"a batch of {len(records)} records")
            return []
        except StoreRejected as exc:
            if len(records) == 1:
                return [(records[0], str(exc))]
            middle = len(records) // 2
            return self._store_records(records[:middle]) + self._store_records(records[middle:])

    def _timed_write(self, records: Sequence[TelemetryRecord]) -> None:
        started = time.perf_counter()
        self._store.write(records, collector=COLLECTOR_NAME, write_time=time.time())
        self.counters.count_batch(len(records), time.perf_counter() - started)

    # --- the summary thread ---------------------------------------------------------------

    def _run_summary(self) -> None:
        interval_s = self.settings.collector_summary_interval_s
        previous = self.counters.snapshot()
        previous_at = time.monotonic()
        while not self._stopping.wait(interval_s):
            try:
                window, previous = self.counters.take_window(previous)
                now = time.monotonic()
                log.info(
                    "last %.0f s: %s", now - previous_at, describe(window, now - previous_at, buffered=self.buffered)
                )
                previous_at = now
            except Exception:
                log.exception("could not summarise the counters")


def _take(buffer: deque[T], limit: int) -> list[T]:
    count = min(len(buffer), limit)
    popleft = buffer.popleft
    return [popleft() for _ in range(count)]
