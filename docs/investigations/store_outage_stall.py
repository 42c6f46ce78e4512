"""The issue-12 scenario, instrumented: was a message the broker accepted ever held back from the subscriber?

    uv run python docs/investigations/store_outage_stall.py --runs 10 --subscriber collector [--code DIR]
    uv run python docs/investigations/store_outage_stall.py --runs 10 --subscriber paho

Each run: the shipped mosquitto.conf plus `log_type all`, a tshark capture of the broker's port, the InfluxDB
API double answering 503 to every write for 8 s in the middle, 5 devices from devices/run_devices.py, and an
independent subscriber on device/data/+ (the witness). The subscriber under test is either our collector
(STORE=influxdb; --code points at another checkout to run an older collector) or a bare paho client with
manual acks that holds its acks while the store is "down", as the collector does. Per run it prints what the
witness saw, the PUBLISH lines the broker logged for the subscriber, the PUBLISH packets on the wire to it
(tshark), and what the subscriber received by the end.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testing")]

import paho.mqtt.client as paho  # noqa: E402
from influxdb_fake import FakeInfluxDB  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from rtds.broker import MosquittoBroker  # noqa: E402
from rtds.testkit import ServiceProcess, Witness, isolated_settings, wait_until  # noqa: E402

SUBSCRIBER_ID = "stall-subscriber"
OUTAGE_S = 8.0


class HoldingPahoSubscriber:
    """paho, manual ack, acks held while `holding` is set and sent together afterwards."""

    def __init__(self, host: str, port: int) -> None:
        self.received = 0
        self.holding = threading.Event()
        self._held: list[int] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=SUBSCRIBER_ID, clean_session=False, manual_ack=True
        )
        self.client.on_connect = lambda client, *_: client.subscribe("device/data/+", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received += 1
            if self.holding.is_set():
                self._held.append(message.mid)
                return
        client.ack(message.mid, message.qos)

    def release(self) -> None:
        with self._lock:
            self.holding.clear()
            held, self._held = self._held, []
        for mid in held:
            self.client.ack(mid, 1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wire_publishes(pcap: Path, broker_port: int) -> dict[int, int]:
    """PUBLISH packets the broker sent, by destination port."""
    output = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={broker_port},mqtt", "-Y",
         f"tcp.srcport == {broker_port} && mqtt.msgtype == 3", "-T", "fields", "-e", "tcp.dstport", "-e", "mqtt.msgtype"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    counts: dict[int, int] = {}
    for line in output.splitlines():
        port, types = line.split("\t")
        counts[int(port)] = counts.get(int(port), 0) + types.split(",").count("3")
    return counts


def one_run(folder: Path, subscriber_kind: str, code: Path) -> dict[str, object]:
    broker = MosquittoBroker(folder / "broker", extra_lines=("log_type all",)).start()
    pcap = folder / "broker.pcap"
    capture = subprocess.Popen(
        ["tshark", "-q", "-i", "lo", "-f", f"tcp port {broker.port}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(2)  # tshark needs a moment before it captures
    fake = FakeInfluxDB(token="t", org="my-org", buckets=("vehicle-data",))
    fake.start()
    settings = isolated_settings(
        folder, broker, store="influxdb", influxdb_url=fake.url, influxdb_token="t", mqtt_client_id=SUBSCRIBER_ID,
        collector_summary_interval_s=30.0,
    )  # fmt: skip
    witness = Witness(broker.host, broker.port, ["device/data/+"])
    collector = paho_subscriber = None
    if subscriber_kind == "collector":
        collector = ServiceProcess(
            ["collector/mqtt_collector.py"], settings=settings, log_path=folder / "collector.log", cwd=code
        ).start()
        wait_until(lambda: "subscribed" in collector.log_text(), 20)
    else:
        paho_subscriber = HoldingPahoSubscriber(broker.host, broker.port)
    devices = ServiceProcess(
        ["devices/run_devices.py", "--count", "5"], settings=settings, log_path=folder / "devices.log"
    ).start()
    time.sleep(6)
    fake.fail_for(OUTAGE_S, 503, retry_after=1)
    if paho_subscriber:
        paho_subscriber.holding.set()
    time.sleep(OUTAGE_S)
    if paho_subscriber:
        paho_subscriber.release()
    time.sleep(6)
    devices.interrupt()
    time.sleep(35)  # past the old collector's 30 s wait, so what it had in hand is written
    seen = len(witness.snapshot())
    if collector is not None:
        collector.terminate()
        match = re.findall(r"collector stopped after .*?received (\d+)", collector.log_text())
        received = int(match[-1]) if match else -1
    else:
        assert paho_subscriber is not None
        received = paho_subscriber.received
        paho_subscriber.close()
    witness.close()
    broker.stop()
    capture.terminate()
    capture.wait(10)
    fake.stop()
    logged = len(re.findall(rf"Sending PUBLISH to {SUBSCRIBER_ID} ", broker.log_text()))
    on_wire = wire_publishes(pcap, broker.port)
    return {"witness": seen, "broker_logged": logged, "on_wire_max_port": max(on_wire.values(), default=0),
            "on_wire_by_port": on_wire, "received": received}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subscriber", choices=("collector", "paho"), default="collector")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose collector runs (default: this one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for index in range(args.runs):
        folder = Path(tempfile.mkdtemp(prefix="stall-"))
        try:
            result = one_run(folder, args.subscriber, args.code.resolve())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(result)
        print(f"run {index + 1}: {result}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
