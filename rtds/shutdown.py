"""A stop request that signal handlers may set.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread
holds the lock inside the threading.Event it is waiting on; Event.set() from the handler then waits
for that lock forever. Seen: a collector worker that never noticed SIGTERM and was killed after its
grace period. `StopRequest.set()` only assigns an attribute, and `wait()` polls it.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

POLL_INTERVAL_S = 0.05
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Like threading.Event for one waiter, without a lock: set() is safe in a signal handler."""

    def __init__(self) -> None:
        self._requested = False

    def set(self) -> None:
        self._requested = True

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until set() or `timeout_s`; True when a stop was requested."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._requested:
            remaining = POLL_INTERVAL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, POLL_INTERVAL_S))
        return True

    def set_on_signals(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        """Call set() on these signals from now on (main thread only)."""
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def ignore_signals(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        """Once the work is done: Python puts the default handlers back while it exits, so a late second
        SIGTERM (a supervisor forwarding the one its process group got) would end the process "killed by
        SIGTERM" after a clean stop. Ignored signals stay ignored."""
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.set()
