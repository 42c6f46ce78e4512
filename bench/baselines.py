"""The baselines our collector is measured against, each draining the same kind of backlog.

- `paho`: a bare paho subscriber that only acks (no parsing, no storage): the raw limit of one
  Python MQTT client. `--ack batched` acks in batches of 250 with a flush timer for the tail,
  `--ack auto` lets paho ack after each `on_message`.
- `mosquitto_sub -q 1 -c` into /dev/null: the broker's and a C client's limit.
- `naive`: the proof-of-concept's design, one point per message written and committed
  synchronously in the callback, acked by paho when the callback returns.

Each Python baseline runs in its own process (`python -m bench.baselines paho|naive ...`) and
prints one JSON line with its count and timings.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rtds.broker import PROJECT_ROOT, MosquittoBroker
from rtds.errors import InvalidMessage
from rtds.schema import DATA_SUBSCRIPTIONS, parse_message
from rtds.store.sqlite import SQLiteStore

ACK_BATCH = 250
ACK_FLUSH_S = 0.05


class DrainCounter:
    """Counts messages and remembers when the first arrived and the last was acked."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.acked = 0
        self.first_at = 0.0
        self.first_cpu_s = 0.0
        self.last_ack_at = 0.0
        self.done = threading.Event()

    def arrived(self) -> None:
        if self.received == 0:
            self.first_at = time.time()
            self.first_cpu_s = time.process_time()
        self.received += 1

    def acked_up_to(self, count: int) -> None:
        self.acked = count
        self.last_ack_at = time.time()
        if self.acked >= self.expected:
            self.done.set()

    def result(self, started: float) -> dict[str, Any]:
        span = self.last_ack_at - self.first_at
        cpu_s = time.process_time() - self.first_cpu_s
        return {
            "cpu_us_per_msg": round(cpu_s / self.acked * 1e6, 1) if self.acked else None,
            "received": self.received,
            "acked": self.acked,
            "first_at": self.first_at,
            "last_ack_at": self.last_ack_at,
            "wall_s": round(self.last_ack_at - started, 4) if self.last_ack_at else None,
            "msgs_per_s": round(self.acked / span, 1) if span > 0 else None,
        }


def _client(host: str, port: int, client_id: str, *, manual_ack: bool) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=manual_ack)
    client.suppress_exceptions = True
    client.connect_async(host, port, keepalive=60)
    return client


def drain_paho(host: str, port: int, client_id: str, expected: int, *, ack: str, timeout_s: float) -> dict[str, Any]:
    """Receive `expected` messages of an existing session and ack them, doing nothing else."""
    started = time.time()
    counter = DrainCounter(expected)
    client = _client(host, port, client_id, manual_ack=ack == "batched")
    pending: list[int] = []
    lock = threading.Lock()

    def flush() -> None:
        with lock:
            mids = pending[:]
            pending.clear()
            acked = counter.received
        for mid in mids:
            client.ack(mid, 1)
        if mids:
            counter.acked_up_to(acked)

    def on_message_auto(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        counter.arrived()
        # paho sends the PUBACK when this returns; counting it here is off by one message at most.
        counter.acked_up_to(counter.received)

    def on_message_batched(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with lock:
            counter.arrived()
            pending.append(message.mid)
            full = len(pending) >= ACK_BATCH
        if full:
            flush()

    def flush_timer() -> None:
        while not counter.done.wait(ACK_FLUSH_S):
            flush()

    client.on_message = on_message_batched if ack == "batched" else on_message_auto
    client.loop_start()
    timer = None
    if ack == "batched":
        timer = threading.Thread(target=flush_timer, daemon=True)
        timer.start()
    counter.done.wait(timeout_s)
    result = counter.result(started)
    time.sleep(0.2)  # let the last PUBACKs leave before DISCONNECT
    client.disconnect()
    client.loop_stop()
    return result


def drain_naive(host: str, port: int, client_id: str, expected: int, *, db: str, timeout_s: float) -> dict[str, Any]:
    """One synchronous write and commit per message, in the callback, as the proof-of-concept did."""
    started = time.time()
    counter = DrainCounter(expected)
    store = SQLiteStore(db)
    client = _client(host, port, client_id, manual_ack=False)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        counter.arrived()
        try:
            record = parse_message(message.topic, message.payload, now=time.time())
        except InvalidMessage:
            return
        record.collector_receive_time = time.time()
        store.write([record], collector="naive", write_time=time.time())
        counter.acked_up_to(counter.received)

    client.on_message = on_message
    client.loop_start()
    counter.done.wait(timeout_s)
    result = counter.result(started)
    client.disconnect()
    client.loop_stop()
    store.close()
    result["capped_at_s"] = timeout_s if counter.acked < expected else None
    return result


def run_python_baseline(kind: str, broker: MosquittoBroker, client_id: str, expected: int, **options: Any) -> dict:
    """Run `drain_paho` or `drain_naive` in a child process and return its JSON result."""
    args = [sys.executable, "-m", "bench.baselines", kind, "--port", str(broker.port), "--client-id", client_id]
    args += ["--expected", str(expected)]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    completed = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, timeout=900, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"baseline {kind} failed: {completed.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(completed.stdout.decode().strip().splitlines()[-1])


def mosquitto_sub_args(broker: MosquittoBroker, client_id: str) -> list[str]:
    args = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-c", "-i", client_id]
    for topic in DATA_SUBSCRIPTIONS:
        args += ["-t", topic]
    return args


def create_mosquitto_sub_session(broker: MosquittoBroker, client_id: str) -> None:
    """`-E`: connect, subscribe, exit; the session stays for the preload."""
    subprocess.run([*mosquitto_sub_args(broker, client_id), "-E"], check=True, timeout=30, capture_output=True)


def drain_mosquitto_sub(broker: MosquittoBroker, client_id: str, expected: int, timeout_s: float) -> dict[str, Any]:
    """`mosquitto_sub -C N` into /dev/null; the rate is over the process's whole life."""
    started = time.time()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        [*mosquitto_sub_args(broker, client_id), "-C", str(expected)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout_s,
        check=False,
    )
    wall = time.time() - started
    if completed.returncode != 0:
        raise RuntimeError(f"mosquitto_sub failed: {completed.stderr.decode(errors='replace')}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    return {
        "received": expected,
        "acked": expected,
        "wall_s": round(wall, 4),
        "msgs_per_s": round(expected / wall, 1),
        "cpu_us_per_msg": round(cpu_s / expected * 1e6, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("paho", "naive"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--ack", choices=("batched", "auto"), default="batched")
    parser.add_argument("--db", default=str(Path("naive.db")))
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.kind == "paho":
        result = drain_paho(args.host, args.port, args.client_id, args.expected, ack=args.ack, timeout_s=args.timeout_s)
    else:
        result = drain_naive(args.host, args.port, args.client_id, args.expected, db=args.db, timeout_s=args.timeout_s)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
