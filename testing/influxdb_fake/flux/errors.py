"""Query errors; each carries the HTTP status and Error `code` the server answers with."""

from __future__ import annotations


class FluxError(Exception):
    """A query error; the server answers `status` with an Error body of `code`."""

    status = 400
    code = "invalid"


class Unsupported(FluxError):
    def __init__(self, what: str) -> None:
        super().__init__(f"fake influxdb does not support: {what}")


class BucketNotFound(FluxError):
    status = 404
    code = "not found"
