"""Check the dashboard's Socket.IO feed: the seed's `python check_socket.py`, the same as `rtds check socket`."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring import health_checks


def main(argv: list[str] | None = None) -> int:
    return health_checks.main(argv, component="socket", prog="check_socket")


if __name__ == "__main__":
    sys.exit(main())
