"""The RabbitMQ objects of the contract, declared identically by the worker and the client.

A queue's arguments must match wherever it is declared, so they live here only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kombu import Exchange, Queue

from worker.settings import Settings

if TYPE_CHECKING:
    from kombu.connection import Connection
    from kombu.transport.virtual import Channel

UNROUTED_EXCHANGE = "moderation.verdicts.unrouted"
UNROUTED_QUEUE = "moderation.verdicts.unrouted"


def _quorum_queue(settings: Settings, name: str, extra: dict[str, str] | None = None) -> Queue:
    """A replicated queue on the default exchange whose poison messages (delivered
    ``delivery_limit`` times) go to the dead-letter queue."""
    return Queue(
        name,
        exchange=Exchange(""),
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": settings.dead_queue,
            "x-dead-letter-strategy": "at-least-once",
            **(extra or {}),
        },
    )


def requests_queue(settings: Settings) -> Queue:
    """Quorum queue: replicated, and a poison message is dead-lettered after N deliveries."""
    return _quorum_queue(settings, settings.requests_queue, {"x-overflow": "reject-publish"})


def requests_exchange(settings: Settings) -> Exchange:
    """A direct exchange into ``moderation.requests``, named like it: producers may
    publish through it or through the default exchange, but RabbitMQ's write permission
    on the default exchange covers every queue, so a producer kept to its own rights
    gets write on this exchange only."""
    return Exchange(settings.requests_queue, type="direct", durable=True)


def deferred_queue(settings: Settings) -> Queue:
    """Requests that need the LLM while this worker's LLM stage is full: consumed at the
    LLM's pace, so its depth is the back-pressure signal (KEDA scales on it too)."""
    return _quorum_queue(settings, settings.deferred_queue)


def dead_queue(settings: Settings) -> Queue:
    return Queue(
        settings.dead_queue,
        exchange=Exchange(""),
        routing_key=settings.dead_queue,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def reviews_queue(settings: Settings) -> Queue:
    """Verdicts for the review store, with their text (worker -> store)."""
    return _quorum_queue(settings, settings.reviews_queue)


def decisions_queue(settings: Settings) -> Queue:
    """Reviewers' decisions (``worker.models.Decision``)."""
    return _quorum_queue(settings, settings.decisions_queue)


def verdicts_exchange(settings: Settings) -> Exchange:
    """Topic exchange; verdicts nobody has bound for land in the unrouted queue, not nowhere."""
    return Exchange(
        settings.verdicts_exchange,
        type="topic",
        durable=True,
        arguments={"alternate-exchange": UNROUTED_EXCHANGE},
    )


def unrouted_queue() -> Queue:
    return Queue(
        UNROUTED_QUEUE,
        exchange=Exchange(UNROUTED_EXCHANGE, type="fanout", durable=True),
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def declare_all(channel: Channel | Connection, settings: Settings) -> None:
    """Declare every object of the contract on ``channel`` (idempotent)."""
    unrouted = unrouted_queue()
    assert unrouted.exchange is not None
    unrouted.exchange(channel).declare()
    unrouted(channel).declare()
    verdicts_exchange(settings)(channel).declare()
    dead_queue(settings)(channel).declare()
    requests = requests_queue(settings)(channel)
    requests.declare()
    exchange = requests_exchange(settings)(channel)
    exchange.declare()
    requests.bind_to(exchange, routing_key=settings.requests_queue)
    deferred_queue(settings)(channel).declare()
    if settings.database_url:  # a review store: its queues
        reviews_queue(settings)(channel).declare()
        decisions_queue(settings)(channel).declare()
