"""Retrying store writes through an outage: how long to wait (`RetryPolicy`, pure), what the outage looked like
(`Outage`, pure), and the loop that waits, probes and logs (`Retrier`).

A store that goes away for a few seconds must cost a few seconds, not half a minute: while it is down the
collector waits at most COLLECTOR_MAX_RETRY_DELAY_MS (default 2 s) between tries, and after
COLLECTOR_MAX_RETRIES failed writes of the same batch it asks the store the cheap question first
(`StoreWriter.ready()`: InfluxDB's /health; SQLite has nothing cheaper than the write itself), so a long
outage costs one small request per try instead of a whole batch. The outage is logged once when it starts
and once when it ends, with how long it lasted and how many messages waited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from collector.counters import CollectorCounters
from rtds.errors import StoreError, StoreMisconfigured, StoreRejected
from rtds.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_DELAY_S = 0.05  # a Retry-After of 0 must not become a busy loop


class Abandoned(Exception):
    """Shutdown gave up on a batch the store would not take; it stays unacked for the broker to redeliver."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Waits of COLLECTOR_RETRY_INTERVAL_MS, doubling per failure up to COLLECTOR_MAX_RETRY_DELAY_MS.

    The first COLLECTOR_MAX_RETRIES retries of a batch send the batch again; after that each try asks
    the store whether it is ready before sending it. A batch is never dropped.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 2.0
    max_retries: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            first_delay_s=settings.collector_retry_interval_ms / 1000,
            max_delay_s=settings.collector_max_retry_delay_ms / 1000,
            max_retries=settings.collector_max_retries,
        )

    def delay_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """The wait after the `failures`-th failure in a row (1 = the first), honouring the store's hint."""
        if retry_after_s is not None and retry_after_s >= 0:
            return max(MIN_DELAY_S, min(retry_after_s, self.max_delay_s))
        return min(self.first_delay_s * 2 ** (failures - 1), self.max_delay_s)

    def probes_first(self, failures: int) -> bool:
        """Whether, after this many failures, the store is asked if it is ready before the batch is sent again."""
        return failures > self.max_retries


@dataclass(slots=True)
class Outage:
    """One stretch of time in which the store took nothing: from the first failure to the next success."""

    started_at: float  # time.monotonic()
    reason: str
    waiting_at_start: int
    waiting_most: int = 0
    failed_writes: int = 0
    probes: int = 0

    def saw(self, waiting: int) -> None:
        self.waiting_most = max(self.waiting_most, waiting)

    def describe_end(self, now: float) -> str:
        return (
            f"the store is back after {now - self.started_at:.1f} s away ({self.failed_writes} failed writes, "
            f"{self.probes} probes); {self.waiting_most} messages waited, unacknowledged, and are being written now"
        )


class Retrier:
    """Runs a write until it succeeds. StoreRejected passes through; every other error is an outage.

    Nothing is acked while it waits, so the broker keeps everything the collector has not stored. Only
    `abandon` (set by a shutdown that ran out of time) ends the wait, with `Abandoned`. `on_recovered` is
    called (in the writer's thread) each time a write succeeds after an outage.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        counters: CollectorCounters,
        *,
        stopping: threading.Event,
        abandon: threading.Event,
        buffered: Callable[[], int],
        ready: Callable[[], bool],
        on_recovered: Callable[[Outage], None] = lambda _outage: None,
    ) -> None:
        self.policy = policy
        self._counters = counters
        self._stopping = stopping
        self._abandon = abandon
        self._buffered = buffered
        self._ready = ready
        self._on_recovered = on_recovered
        self.outage: Outage | None = None
        self._misconfigured_reported = False

    def run(self, action: Callable[[], T], *, what: str) -> T:
        failures = 0
        while True:
            try:
                result = action()
            except StoreRejected:
                raise
            except Exception as exc:
                failures += 1
                self._counters.retries += 1
                self._failed(exc, what)
                self._wait_before_retry(exc, failures)
                continue
            if self.outage is not None:
                self._recovered()
            return result

    def _failed(self, exc: Exception, what: str) -> None:
        waiting = self._buffered()
        if self.outage is None:
            self.outage = Outage(time.monotonic(), _reason(exc), waiting)
            self._log_start(exc, what, waiting)
        self.outage.failed_writes += 1
        self.outage.saw(waiting)

    def _wait_before_retry(self, exc: Exception, failures: int) -> None:
        """Wait, and once the quick retries are used up, keep waiting until the store says it is ready."""
        retry_after = exc.retry_after if isinstance(exc, StoreError) else None
        while True:
            delay = self.policy.delay_s(failures, retry_after)
            if self._stopping.is_set():
                delay = min(delay, self.policy.first_delay_s)  # shutdown has a deadline: try more often
            if self._abandon.wait(delay):
                raise Abandoned from exc
            if not self.policy.probes_first(failures) or self._probe():
                return
            failures += 1
            retry_after = None

    def _probe(self) -> bool:
        assert self.outage is not None
        self.outage.probes += 1
        self.outage.saw(self._buffered())
        try:
            return self._ready()
        except Exception as exc:  # a probe answers yes or no; a bug in one must not stop the writer
            log.debug("the store's readiness probe failed: %s", _reason(exc))
            return False

    def _recovered(self) -> None:
        outage, self.outage = self.outage, None
        assert outage is not None
        self._misconfigured_reported = False
        log.warning("%s", outage.describe_end(time.monotonic()))
        try:
            self._on_recovered(outage)
        except Exception:
            log.exception("unexpected error after the store came back")

    def _log_start(self, exc: Exception, what: str, waiting: int) -> None:
        if isinstance(exc, StoreMisconfigured):
            if not self._misconfigured_reported:
                self._misconfigured_reported = True
                log.error(
                    "the store refused the collector: %s. Holding %d messages unacknowledged and retrying every "
                    "%g s until the store's settings are fixed",
                    exc,
                    waiting,
                    self.policy.max_delay_s,
                )
            return
        # A store error is expected during an outage; anything else is a bug worth its traceback, once.
        log.warning(
            "the store is unavailable (writing %s failed: %s); holding %d messages unacknowledged, so the broker "
            "keeps them and everything behind them, and trying again every %g s at most until it answers",
            what,
            _reason(exc),
            waiting,
            self.policy.max_delay_s,
            exc_info=not isinstance(exc, StoreError),
        )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
