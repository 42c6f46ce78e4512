"""`python collector/mqtt_collector.py` (or `rtds collector`): device data from MQTT into the store.

Subscribes to device/data/+ and vehicle/speed/+ at QoS 1 on a persistent session (MQTT_CLIENT_ID),
writes batches to the store chosen by STORE=, and acks each message only after its batch is durable.
SIGTERM or Ctrl-C writes and acks what is buffered, disconnects and prints a summary.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.service import Collector
from rtds.errors import ConfigError, StoreError
from rtds.logs import configure_logging
from rtds.settings import Settings, load_settings
from rtds.store import open_store
from rtds.store.deadletter import DeadLetterStore

log = logging.getLogger("collector.mqtt_collector")


def run(settings: Settings) -> int:
    """Collect until SIGTERM/SIGINT. 0 after a clean stop; 1 if the store would not take what was buffered
    or the writer failed (a supervisor should restart it; nothing unwritten was acked)."""
    try:
        store = open_store(settings)
        dead_letters = DeadLetterStore.from_settings(settings)
    except (sqlite3.Error, OSError, StoreError) as exc:
        log.error(
            "cannot open the store (SQLITE_PATH=%s, DEAD_LETTER_PATH=%s): %s. Check that the folder exists "
            "and is writable by this user.",
            settings.sqlite_path,
            settings.dead_letter_path,
            exc,
        )
        return 1
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    collector = Collector(settings, store, dead_letters)
    try:
        collector.start()
        while not stop_requested.wait(0.5):
            if collector.failed.is_set():
                break
        log.info("stopping: writing and acking what is buffered")
        clean = collector.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
        dead_letters.close()
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rtds collector",
        description="Subscribe to device data over MQTT and write it to the store (settings come from .env).",
    )
    parser.add_argument("--client-id", help="MQTT client id of the persistent session (default: MQTT_CLIENT_ID)")
    parser.add_argument("--shared-group", help="join a shared subscription group (default: COLLECTOR_SHARED_GROUP)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.client_id:
            settings = settings.with_overrides(mqtt_client_id=args.client_id)
        if args.shared_group:
            settings = settings.with_overrides(collector_shared_group=args.shared_group)
        configure_logging(settings.log_level)
        return run(settings)
    except ConfigError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
