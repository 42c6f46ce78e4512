"""Retrying store writes: how long to wait (`RetryPolicy`, pure) and the loop that waits and logs (`Retrier`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from collector.counters import CollectorCounters
from rtds.errors import StoreError, StoreMisconfigured, StoreRejected
from rtds.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Abandoned(Exception):
    """Shutdown gave up on a batch the store would not take; it stays unacked for the broker to redeliver."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """COLLECTOR_RETRY_INTERVAL_MS, doubling per failure up to COLLECTOR_MAX_RETRY_DELAY_MS.

    After COLLECTOR_MAX_RETRIES the batch is not dropped: it keeps being retried at the maximum delay,
    unacknowledged, so the broker keeps everything behind it until the store is back.
    """

    first_delay_s: float = 5.0
    max_delay_s: float = 30.0
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
        if failures > self.max_retries:
            return self.max_delay_s
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_delay_s)
        return min(self.first_delay_s * 2 ** (failures - 1), self.max_delay_s)

    def exhausted(self, failures: int) -> bool:
        """True once the configured retries are used up (the collector then holds and keeps retrying)."""
        return failures > self.max_retries


class Retrier:
    """Runs a write until it succeeds. StoreRejected passes through; every other error is an outage.

    Nothing is acked while it waits, so the broker's in-flight window fills and delivery stops: that is
    the back-pressure that keeps the rest of the stream safe in the broker. After the configured retries
    it keeps going at the maximum delay; it never drops a batch. Only `abandon` (set by a shutdown that
    ran out of time) ends the wait, with `Abandoned`.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        counters: CollectorCounters,
        *,
        stopping: threading.Event,
        abandon: threading.Event,
        buffered: Callable[[], int],
    ) -> None:
        self.policy = policy
        self._counters = counters
        self._stopping = stopping
        self._abandon = abandon
        self._buffered = buffered
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
                self._log_failure(exc, failures, what)
                if isinstance(exc, StoreMisconfigured):
                    delay = self.policy.max_delay_s
                else:
                    delay = self.policy.delay_s(failures, exc.retry_after if isinstance(exc, StoreError) else None)
                if self._stopping.is_set():
                    delay = min(delay, self.policy.first_delay_s)  # shutdown has a deadline: try more often
                if self._abandon.wait(delay):
                    raise Abandoned from exc
                continue
            if failures:
                log.info("writing %s succeeded after %d retries; catching up", what, failures)
                self._misconfigured_reported = False
            return result

    def _log_failure(self, exc: Exception, failures: int, what: str) -> None:
        if isinstance(exc, StoreMisconfigured):
            if not self._misconfigured_reported:
                self._misconfigured_reported = True
                log.error(
                    "the store refused the collector: %s. Holding %d messages unacknowledged and retrying every "
                    "%g s until the store's settings are fixed",
                    exc,
                    self._buffered(),
                    self.policy.max_delay_s,
                )
            return
        reason = f"{type(exc).__name__}: {exc}"
        # A store error is expected during an outage; anything else is a bug worth its traceback, once.
        traceback = failures == 1 and not isinstance(exc, StoreError)
        if self.policy.exhausted(failures):
            log.warning(
                "writing %s still fails after %d retries (%s); holding %d messages unacknowledged and retrying "
                "every %g s; the broker keeps everything behind them",
                what,
                failures - 1,
                reason,
                self._buffered(),
                self.policy.max_delay_s,
                exc_info=traceback,
            )
        else:
            log.warning(
                "writing %s failed (%s); retry %d of %d in %g s, acking nothing meanwhile",
                what,
                reason,
                failures,
                self.policy.max_retries,
                self.policy.delay_s(failures, getattr(exc, "retry_after", None)),
                exc_info=traceback,
            )
