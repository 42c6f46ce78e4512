"""`python collector/device_status_api.py`: the device status API on its own port (DEVICE_STATUS_PORT, 5001).

GET /api/devices/status answers exactly as the dashboard's endpoint of that name (the same code,
dashboard/status.py): every device the store knows, online or offline, last seen, and why. GET
/health answers 200 with the store's and the broker's state, or 503 when either is unreachable.
It reads the store named by STORE= and the retained presence messages, like the dashboard, and
has no login: keep it on 127.0.0.1 (the default FLASK_HOST) or behind your proxy's access control.
SIGTERM or Ctrl-C stops it with a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.status import run_status_service
from rtds.cli import command_prog
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_prog("device-status"), description="Serve /api/devices/status and /health on their own port."
    )
    parser.add_argument("--host", help="address to listen on (default: FLASK_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: DEVICE_STATUS_PORT, 5001)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        return run_status_service(settings, args.host or settings.flask_host, args.port or settings.device_status_port)
    except ConfigError as exc:
        print(f"device status API: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
