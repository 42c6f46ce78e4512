"""Health checks: `rtds check mqtt|store|socket|all`. Exit 0 when healthy, 1 with a one-line reason otherwise.

python monitoring/health_checks.py mqtt
python monitoring/health_checks.py socket --url http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.cli_support import duration_argument, load_tool_settings, print_json, tool_parser
from monitoring.health import CheckResult, check_mqtt, check_socket, check_store, dashboard_url

PROG = "rtds check"
COMPONENTS = ("mqtt", "store", "socket", "all")


def build_parser(prog: str = PROG, component: str | None = None) -> argparse.ArgumentParser:
    parser = tool_parser(
        "check",
        "mqtt:   connect to the broker with the settings (TLS, login), publish to a private topic, receive it back\n"
        "store:  the store's health (SQLite file; InfluxDB ping, with INFLUXDB_URL_FALLBACK)\n"
        "socket: connect to the dashboard's Socket.IO and wait for one latest_data event\n"
        "all:    the three, in that order",
        prog=prog,
    )
    if component is None:
        parser.add_argument("component", choices=COMPONENTS, help="what to check")
    parser.add_argument("--timeout", type=duration_argument, default=5.0, help="give up after this long (default 5s)")
    parser.add_argument("--url", help="dashboard URL for the socket check (default: http://FLASK_HOST:FLASK_PORT)")
    parser.add_argument("--username", help="dashboard user, when its login is on (default: DASHBOARD_USERNAME)")
    parser.add_argument("--password", help="dashboard password, when its login is on")
    return parser


def main(argv: list[str] | None = None, *, component: str | None = None, prog: str = PROG) -> int:
    args = build_parser(prog, component).parse_args(argv)
    settings = load_tool_settings(args)
    chosen = component or args.component
    names = ("mqtt", "store", "socket") if chosen == "all" else (chosen,)
    results: list[CheckResult] = []
    for name in names:
        if name == "mqtt":
            results.append(check_mqtt(settings, args.timeout))
        elif name == "store":
            results.append(check_store(settings))
        else:
            username = args.username or settings.dashboard_username or None
            results.append(
                check_socket(
                    args.url or dashboard_url(settings), args.timeout, username=username, password=args.password
                )
            )
    ok = all(result.ok for result in results)
    if args.json:
        print_json({"ok": ok, "checks": [result.as_dict() for result in results]})
    else:
        for result in results:
            if result.ok:
                print(f"{result.component}: OK: {result.detail}")
            else:
                print(f"{result.component}: FAILED: {result.detail}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
