"""`rtds`: one command that reaches every service and tool.

Each subcommand is a module with `main(argv) -> int`; it is imported only when used, so
`rtds device` never loads Flask and `rtds dashboard` never loads the simulators.
"""

from __future__ import annotations

import importlib
import sys

from rtds.errors import ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("rtds.stack", "start the whole stack: broker (if none), collector, devices, dashboard"),
    "device": ("devices.device_simulator", "run one simulated vehicle: rtds device vehicle_01"),
    "devices": ("devices.run_devices", "run a fleet of simulated vehicles (default 10)"),
    "collector": ("collector.mqtt_collector", "subscribe to device data and write it to the store"),
    "dashboard": ("dashboard.app", "serve the live dashboard and its REST API"),
    "device-status": ("collector.device_status_api", "serve /api/devices/status and /health on DEVICE_STATUS_PORT"),
    "latency": ("monitoring.monitor_latency", "one latency snapshot with a verdict"),
    "collect-latency": ("monitoring.collect_latency_data", "sample latency statistics into a JSON file"),
    "report": ("monitoring.generate_latency_report", "write PNG charts and a Markdown latency report"),
    "spike": ("monitoring.investigate_spike", "find and explain latency spikes"),
    "write-perf": ("monitoring.check_influxdb_performance", "analyse the store's write pattern"),
    "delivery": ("monitoring.check_delivery", "check that every device's seq range was stored"),
    "check": ("monitoring.health_checks", "health checks: rtds check mqtt|store|socket"),
    "bench": ("bench.runner", "run the benchmarks: rtds bench [--quick] [scenario ...]"),
}


_running_command: str | None = None  # the command `main` is running, so that its parser can name itself


def command_prog(command: str) -> str | None:
    """The `prog` of a command's argparse parser: `rtds COMMAND` when `rtds` runs it, otherwise None, so
    that argparse names the script as it was started (`python devices/device_simulator.py --help` says
    `usage: device_simulator.py`)."""
    return f"rtds {command}" if _running_command == command else None


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: rtds COMMAND [options]   (rtds COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rtds: {name!r} is not a command.\n\n{usage()}", file=sys.stderr)
        return 2
    global _running_command
    module = importlib.import_module(COMMANDS[name][0])
    _running_command = name
    try:
        return int(module.main(rest) or 0)
    except ConfigError as exc:
        print(f"rtds {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        _running_command = None


if __name__ == "__main__":
    sys.exit(main())
