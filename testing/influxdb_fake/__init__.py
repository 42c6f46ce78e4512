"""A fake InfluxDB OSS 2.x server for tests; see README.md."""

from .server import FakeInfluxDB, Point, RecordedRequest

__all__ = ["FakeInfluxDB", "Point", "RecordedRequest"]
