"""`python collector/mqtt_collector.py` (or `rtds collector`): device data from MQTT into the store.

Subscribes to device/# and vehicle/speed/# at QoS 1 on a persistent session (MQTT_CLIENT_ID),
writes batches to the store chosen by STORE=, and acks each message only after its batch is durable.
SIGTERM or Ctrl-C writes and acks what is buffered, disconnects and prints a summary.
With --workers N (COLLECTOR_WORKERS) it runs N such processes in one shared-subscription group
and restarts any that dies (collector/workers.py).
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.service import Collector
from collector.workers import EXIT_CONFIG_ERROR, forget_session, run_workers
from rtds.cli import command_prog
from rtds.errors import ConfigError, StoreError
from rtds.logs import configure_logging
from rtds.settings import Settings, load_settings
from rtds.shutdown import StopRequest
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
    stop_requested = StopRequest()
    stop_requested.set_on_signals()  # a second signal while stopping changes nothing
    collector = Collector(settings, store, dead_letters)
    try:
        collector.start()
        while not stop_requested.wait(0.5):
            if collector.failed.is_set() or collector.broker_unsuitable.is_set():
                break
        log.info("stopping: writing and acking what is buffered")
        clean = collector.stop()
        stop_requested.ignore_signals()
    finally:
        store.close()
        dead_letters.close()
    if collector.broker_unsuitable.is_set():
        return EXIT_CONFIG_ERROR  # a restart would meet the same broker: the supervisor stops every worker
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_prog("collector"),
        description="Subscribe to device data over MQTT and write it to the store (settings come from .env).",
    )
    parser.add_argument("--client-id", help="MQTT client id of the persistent session (default: MQTT_CLIENT_ID)")
    parser.add_argument("--shared-group", help="join a shared subscription group (default: COLLECTOR_SHARED_GROUP)")
    parser.add_argument(
        "--workers",
        type=int,
        help="collector processes in one shared group, client ids <client id>-1 ... -N (default: COLLECTOR_WORKERS)",
    )
    parser.add_argument(
        "--forget-session",
        metavar="CLIENT_ID",
        help="delete the broker's persistent session CLIENT_ID and exit (after changing --workers; README)",
    )
    parser.add_argument("--log-tag", default="", help=argparse.SUPPRESS)  # set by the supervisor for its workers
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.client_id:
            settings = settings.with_overrides(mqtt_client_id=args.client_id)
        if args.shared_group:
            settings = settings.with_overrides(collector_shared_group=args.shared_group)
        configure_logging(settings.log_level, tag=args.log_tag)
        if args.forget_session:
            return _forget(settings, args.forget_session)
        workers = settings.collector_workers if args.workers is None else args.workers
        if workers < 1:
            raise ConfigError(f"--workers {workers} must be 1 or more")
        if workers > 1:
            return run_workers(settings, workers)
        return run(settings)
    except ConfigError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        return 2


def _forget(settings: Settings, client_id: str) -> int:
    where = f"{settings.mqtt_broker_host}:{settings.mqtt_broker_port}"
    try:
        forget_session(settings, client_id)
    except ConnectionError as exc:
        print(f"collector: cannot delete the session {client_id!r} at {where}: {exc}", file=sys.stderr)
        return 1
    print(f"deleted the session {client_id!r} at {where}: the broker no longer queues messages for it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
