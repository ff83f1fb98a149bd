"""The backlog monitor against the real RabbitMQ: the queue's ready count, once a second."""

from __future__ import annotations

import time

from kombu import Connection, Queue

from worker._backlog import QueueDepth


def test_queue_depth_follows_the_broker(broker_url):
    name = f"test.backlog.{time.monotonic_ns()}"
    with Connection(broker_url) as connection:
        queue = Queue(name, durable=False, auto_delete=False)
        queue(connection.default_channel).declare()
        depth = QueueDepth(broker_url, name, interval=0.1).start()
        try:
            producer = connection.Producer()
            for n in range(120):
                producer.publish({"n": n}, routing_key=name)
            deadline = time.monotonic() + 10
            while not depth.backlogged(batch=64) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert depth.ready == 120 and depth.backlogged(batch=64)
            connection.default_channel.queue_purge(name)
            deadline = time.monotonic() + 10
            while depth.ready and time.monotonic() < deadline:
                time.sleep(0.05)
            assert depth.ready == 0
        finally:
            depth.stop()
            connection.default_channel.queue_delete(name)


def test_a_missing_queue_is_no_backlog_and_no_crash(broker_url):
    depth = QueueDepth(broker_url, "test.backlog.never-declared", interval=0.05).start()
    time.sleep(0.5)
    assert depth.ready == 0 and depth._thread.is_alive()
    depth.stop()
