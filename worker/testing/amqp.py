"""The AMQP toolkit of the tests and the benchmark, next to the simulated LLM.

One producer, one verdict collector, one vhost fixture and one worker launcher, so that
the reliability tests and the benchmark measure the worker with the same instruments:

- ``Producer``: raw bodies (with properties) to a queue, publisher-confirmed
  (``worker._confirms.ConfirmTracker``, as the worker's own publisher), paced, with a
  window of unconfirmed publishes, optionally a closed loop on answered requests, over
  one or more connections; republishing what was nacked, returned or lost, or not.
- ``VerdictCollector``: a queue bound to the verdict exchange (durable and reconnecting,
  or exclusive and cheap) plus ``moderation.dead``, in a thread; per id what arrived,
  and when (``time.monotonic()``, system-wide on Linux, so it compares across
  processes); ``wait_for(ids, timeout)``.
- ``temporary_vhost()``: a vhost of one's own for the duration, then deleted.
- ``WorkerProcess`` / ``WorkerLauncher``: ``celery -A worker worker`` subprocesses,
  ready on their health file, stopped with SIGTERM (SIGKILL after a time-out).
- ``RabbitCluster``: a RabbitMQ cluster of our own on this machine, nodes to kill -9
  and start again (``cluster_unavailable()`` says why one cannot run here).

Every URL may be a list in kombu's failover syntax (``amqp://a;amqp://b``).

py-amqp directly, not kombu: kombu's confirmed publishing waits for each confirm.
"""

from __future__ import annotations

from worker._confirms import ConfirmGroup, ConfirmTracker
from worker.testing._amqp_broker import BrokerAddress, close, drain, rabbitmqctl, temporary_vhost
from worker.testing._amqp_collector import (
    DeadRecord,
    VerdictCollector,
    parse_json,
    parse_verdict,
    request_id,
)
from worker.testing._amqp_producer import KEY_HEADER, Outgoing, Producer
from worker.testing._amqp_workers import (
    SOURCE,
    WorkerLauncher,
    WorkerOptions,
    WorkerProcess,
    send,
    spawn,
    terminate,
)
from worker.testing._rabbit_cluster import RabbitCluster
from worker.testing._rabbit_cluster import unavailable as cluster_unavailable

__all__ = [
    "KEY_HEADER",
    "SOURCE",
    "BrokerAddress",
    "ConfirmGroup",
    "ConfirmTracker",
    "DeadRecord",
    "Outgoing",
    "Producer",
    "RabbitCluster",
    "VerdictCollector",
    "WorkerLauncher",
    "WorkerOptions",
    "WorkerProcess",
    "close",
    "cluster_unavailable",
    "drain",
    "parse_json",
    "parse_verdict",
    "rabbitmqctl",
    "request_id",
    "send",
    "spawn",
    "temporary_vhost",
    "terminate",
]
