"""The project's error types: one base class and a few subclasses that callers act on."""

from __future__ import annotations


class RtdsError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(RtdsError):
    """A setting is missing or wrong. The message names the key and the fix."""


class InvalidMessage(RtdsError):
    """A payload that cannot become a record. `reason` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StoreError(RtdsError):
    """A store could not complete an operation.

    `retryable` says whether the same batch may succeed later (outage, overload).
    `retry_after` is the server's hint in seconds, when it gave one.
    """

    retryable: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(StoreError):
    """The store is down, locked or overloaded; retry the same batch later."""

    retryable = True


class StoreRejected(StoreError):
    """The store refused this batch's content; retrying it cannot help. Dead-letter it."""

    retryable = False


class StoreMisconfigured(StoreError):
    """The store refused us (bad token, missing bucket). Hold the batch until an operator fixes it."""

    retryable = True
