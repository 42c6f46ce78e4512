"""Logging set-up for entry points, and a rate limiter for warnings that could repeat per message."""

from __future__ import annotations

import logging
import threading
import time


def configure_logging(level: str = "INFO", *, tag: str = "") -> None:
    """Called once, by an entry point; shared code never configures logging.

    `tag` marks every line of a process that shares its output with others ("[worker 2/4]").
    """
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


class RateLimitedLog:
    """At most one log line per key per `interval_s`; the lines held back are counted in the next one."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def would_log(self, key: str) -> bool:
        """Whether a warning under `key` would be written now (to skip costly work for one held back)."""
        with self._lock:
            return time.monotonic() - self._last.get(key, float("-inf")) >= self._interval_s

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, float("-inf")) < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            held_back = self._suppressed.pop(key, 0)
        if held_back:
            message += f" (and {held_back} more like it in the last {self._interval_s:.0f} s)"
        self._logger.warning(message, *args)
