"""Scenario cluster: what a clustered broker costs, measured as the drain scenario measures it.

The same backlog (N QoS 1 messages of about 500 bytes from 1,000 devices, published while the collector's
persistent session is offline) is drained twice in one run, through nats-server 2.9's MQTT with JetStream:
- one node;
- a 3-node cluster (sessions and messages replicated on all three, as testing/test_nats_cluster.py runs
  it), the publishers on node 1 and the collector on node 2 with the other nodes as its fallbacks.
The figure is each drain's rate (first message received to last durable write, read back from the store)
and the ratio of the cluster's to the one node's. Mosquitto is not in it: it has no cluster, and its own
drain is the drain scenario.

Then the dashboard's side of running on several machines (bench.dashboard_load.compare_processes): the same
Socket.IO clients served by one dashboard process, then by two sharing their live feed through Redis (half
of the clients on each), with the tick jitter of both side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.dashboard_load import compare_processes
from bench.drain import drain_backlog
from bench.harness import fresh_dir, ratio, target
from rtds.nats_cluster import NatsCluster, find_nats_server

FULL = {"messages": 50_000, "publishers": 2}
QUICK = {"messages": 5_000, "publishers": 1}
# Every message is written to JetStream and, in the cluster, agreed on by a majority of three nodes before
# the publisher's PUBACK: the cluster may cost up to half the one node's rate.
TARGET_CLUSTER_VS_ONE_NODE = 0.5


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    if find_nats_server() is None:
        raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
    params: dict[str, Any] = dict(QUICK if quick else FULL)
    messages, publishers = params["messages"], params["publishers"]
    one_node = _drain(workdir / "one_node", 1, messages, publishers)
    three_nodes = _drain(workdir / "three_nodes", 3, messages, publishers)
    cluster_ratio = ratio(three_nodes["msgs_per_s"], one_node["msgs_per_s"])
    targets = [
        target(
            "drain through 3 nodes / through 1 node",
            cluster_ratio,
            TARGET_CLUSTER_VS_ONE_NODE,
            at_least=True,
        ),
        target(
            "messages neither stored nor left on the cluster",
            messages - three_nodes["stored"] + three_nodes["left_unacked_on_broker"],
            0,
            at_least=False,
        ),
    ]
    dashboards = compare_processes(workdir / "dashboard", quick=quick)
    targets += dashboards["targets"]  # named "dashboard ... (1 process)" and "(2 processes)"
    params.update({"qos": 1, "broker": "nats-server (MQTT + JetStream)", "store": "sqlite"})
    params["dashboard"] = dashboards["parameters"]
    drain_targets_met = all(judged["met"] for judged in targets[:2])
    return {
        "parameters": params,
        "figures": {"one_node": one_node, "three_nodes": three_nodes, "dashboard": dashboards["figures"]},
        "baselines": {},
        "ratios": {
            "three_nodes_vs_one_node": cluster_ratio,
            **{f"dashboard_{k}": v for k, v in dashboards["ratios"].items()},
        },
        "targets": targets,
        "rows": [
            {
                "scenario": "cluster",
                "figure": (
                    f"3-node NATS cluster {_rate_text(three_nodes)}, one node {_rate_text(one_node)}; "
                    f"{messages:,} msgs, {three_nodes['stored']:,} stored, "
                    f"{three_nodes['left_unacked_on_broker']} left unacked"
                ),
                "baselines": f"one nats-server node {_rate_text(one_node)}",
                "ratios": f"3 nodes / 1 node {cluster_ratio}",
                "target": f">= {TARGET_CLUSTER_VS_ONE_NODE} x one node, nothing lost",
                "met": drain_targets_met,
            },
            *({**row, "scenario": f"cluster: {row['scenario']}"} for row in dashboards["rows"]),
        ],
    }


def _drain(workdir: Path, size: int, messages: int, publishers: int) -> dict[str, Any]:
    workdir = fresh_dir(workdir)
    cluster = NatsCluster(workdir / "nats", size=size).start()
    try:
        publisher_node = cluster.nodes[0]
        collector_node = cluster.nodes[1 % size]
        result = drain_backlog(
            workdir,
            collector_node,
            publisher_node,
            messages,
            publishers,
            mqtt_broker_fallback_hosts=cluster.fallback_hosts(collector_node),
        )
    finally:
        cluster.kill()
    result["nodes"] = size
    return result


def _rate_text(result: dict[str, Any]) -> str:
    rate = result.get("msgs_per_s")
    return f"{rate:,.0f} msg/s" if rate else "n/a"
