"""The Celery glue's settings that a cluster depends on."""

from __future__ import annotations

from celery.utils.imports import symbol_by_name

from worker import topology
from worker.celery_app import create_app
from worker.settings import Settings


def test_every_queue_the_worker_declares_is_a_quorum_queue():
    settings = Settings()
    app = create_app(settings)
    queues = [
        *app.amqp.queues.values(),
        topology.requests_queue(settings),
        topology.deferred_queue(settings),
        topology.dead_queue(settings),
        topology.unrouted_queue(),
    ]
    classic = [q.name for q in queues if (q.queue_arguments or {}).get("x-queue-type") != "quorum"]
    assert not classic, f"these live on one node and fail with it: {classic}"


def test_the_consumer_has_no_delayed_delivery_step():
    app = create_app(Settings())
    consumer = symbol_by_name(app.conf.worker_consumer)
    steps = consumer.Blueprint(steps=app.steps["consumer"]).claim_steps()
    assert not [name for name in steps if "DelayedDelivery" in name]
    assert "worker.steps.Moderation" in steps
