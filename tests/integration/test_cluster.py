"""A 3-node RabbitMQ cluster losing a node: first the one holding the requests queue's
leader, then, once it is back, the one the worker is connected to.

Three ``rabbitmq-server`` nodes of our own (``worker.testing.amqp.RabbitCluster``:
ports 5681-5683, own node names and data directories, joined with ``join_cluster``);
the worker, the producer and the collector each get all three URLs in kombu's failover
syntax. Prints one ``RELIABILITY scenario=cluster_node_loss`` line.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from kombu import Connection

from worker import topology
from worker.settings import Settings
from worker.testing.amqp import Producer, RabbitCluster, VerdictCollector, cluster_unavailable
from worker.testing.fake_llm import FakeLLM

from ._faults import (
    Collector,
    assert_none_lost,
    assert_repeats_flagged,
    mixed_texts,
    requests_for,
    summary,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(cluster_unavailable() is not None, reason=str(cluster_unavailable())),
]

TOTAL = 3000
RATE = 100.0  # msg/s: 30 s of publishing, through both kills


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"), size=3, base_port=5680) as c:
        yield c


def _connected(cluster: RabbitCluster, node) -> int:
    result = cluster.ctl(node, "list_connections", "user", check=False)
    return len(result.stdout.split()) if result.returncode == 0 else 0


def _max_gap(times: list[float], start: float, end: float) -> float:
    """The longest time in [start, end] without a new verdict."""
    points = sorted(t for t in times if start <= t <= end)
    edges = [start, *points, end]
    return max((b - a for a, b in itertools.pairwise(edges)), default=0.0)


def test_losing_the_leader_node_and_then_the_workers_node_loses_nothing(
    cluster: RabbitCluster, start_worker, llm: FakeLLM
):
    one, two, three = cluster.nodes
    settings = Settings(broker_url=one.url)
    with Connection(one.url) as conn:  # declared on node 1: its leader starts there
        topology.declare_all(conn.default_channel, settings)
    leader, members = cluster.quorum_members("moderation.requests", via=two)
    assert members == sorted(n.name for n in cluster.nodes), "not replicated on all three"

    llm.state.control({"timing": "real", "ttft_ms": 50, "token_ms": 1})
    # the worker on node 2 first; producer and collector on node 3 first
    worker_urls = ";".join(n.url for n in (two, three, one))
    client_urls = ";".join(n.url for n in (three, one, two))
    worker = start_worker(MODERATION_BROKER_URL=worker_urls)
    collector: Collector = VerdictCollector(
        client_urls, Settings(broker_url=client_urls), queue_name="test.cluster.verdicts"
    ).start()
    items = requests_for("cl", mixed_texts(TOTAL, seed=11))
    ids = {i.key for i in items}
    producer = Producer(client_urls, connect_attempts=3)
    publishing = threading.Thread(
        target=lambda: producer.publish(items, rate=RATE, deadline_s=240), daemon=True
    )
    started = time.monotonic()
    publishing.start()
    try:
        while len(collector.resolved(ids)) < 300 and time.monotonic() - started < 60:
            time.sleep(0.05)
        assert _connected(cluster, two) > 0, "the worker is not on node 2"

        leader_node = cluster.node_named(leader or one.name)
        killed_leader_at = time.monotonic()
        cluster.kill(leader_node)
        time.sleep(3)
        cluster.start(leader_node)
        back_at = time.monotonic()
        new_leader, _ = cluster.quorum_members("moderation.requests", via=leader_node)

        time.sleep(2)
        worker_node = two if leader_node is not two else three
        assert _connected(cluster, worker_node) > 0, f"the worker is not on {worker_node.name}"
        killed_workers_node_at = time.monotonic()
        cluster.kill(worker_node)
        time.sleep(3)
        cluster.start(worker_node)
        restored_at = time.monotonic()

        publishing.join(240)
        confirmed = set(producer.confirmed)
        collector.wait_for(confirmed, timeout=120)
        collector.settle(quiet_s=1.0)
        done_at = time.monotonic()
        gap = _max_gap(list(collector.first_at.values()), killed_leader_at, done_at)
        _, _, lost = summary(
            "cluster_node_loss",
            confirmed,
            collector,
            published=TOTAL,
            confirmed=len(confirmed),
            republished=producer.republished,
            killed=f"{leader_node.name}(leader)+{worker_node.name}(worker's)",
            leader_after=new_leader,
            leader_down_s=round(back_at - killed_leader_at, 1),
            worker_node_down_s=round(restored_at - killed_workers_node_at, 1),
            longest_gap_s=round(gap, 1),
            collector_reconnects=collector.reconnects,
            worker_alive=worker.proc is not None and worker.proc.poll() is None,
        )
        assert_none_lost(lost)
        assert_repeats_flagged(confirmed, collector)
        assert not collector.bad
        assert len(confirmed) == TOTAL, "the producer gave up before everything was confirmed"
        assert worker.proc is not None and worker.proc.poll() is None, (
            "the worker exited:\n" + worker.output()[-3000:]
        )
        assert gap < 30, f"verdicts stopped for {gap:.0f} s after a node was lost"
    finally:
        collector.stop()
