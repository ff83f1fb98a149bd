"""The private shortcuts of ``worker._kombu_compat`` and their public fallbacks give the
same deliveries, on the real RabbitMQ."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

from worker._kombu_compat import (
    FAST_DELIVERIES,
    RawDelivery,
    body_bytes,
    connection_socket,
    raw_deliveries,
    worker_shutting_down,
)

BODY = '{"id": "é-1", "text": "grüß dich 👋"}'.encode()


def _receive(broker_url: str, fast: bool) -> Any:
    name = f"test.compat.{uuid.uuid4().hex[:8]}"
    with Connection(broker_url) as connection:
        channel = connection.channel()
        queue = Queue(name, durable=False, auto_delete=True)
        queue(channel).declare()
        connection.Producer(channel).publish(
            BODY,
            routing_key=name,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"x-moderation-redelivered": True},
        )
        received: list[Any] = []
        consumer_channel = raw_deliveries(connection.channel(), fast=fast)
        with Consumer(consumer_channel, queues=[queue], on_message=received.append, no_ack=False):
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                connection.drain_events(timeout=1)
        message = received[0]
        seen = (
            body_bytes(message),
            message.content_type,
            message.content_encoding,
            dict(message.headers),
            type(message),
        )
        message.ack()
        return seen


@pytest.mark.parametrize("fast", [True, False], ids=["shortcut", "public"])
def test_both_paths_deliver_the_same_request(broker_url, fast):
    body, content_type, encoding, headers, kind = _receive(broker_url, fast)
    assert body == BODY  # bytes as sent, whichever path decoded what
    assert (content_type, encoding) == ("application/json", "utf-8")
    assert headers == {"x-moderation-redelivered": True}
    assert (kind is RawDelivery) == fast


def test_the_shortcut_is_on_for_the_tested_kombu():
    assert FAST_DELIVERIES  # the pinned kombu is the tested one


def test_the_consumer_socket_or_none(broker_url):
    with Connection(broker_url) as connection:
        connection.connect()
        assert connection_socket(connection) is not None
    assert connection_socket(object()) is None


def test_no_shutdown_outside_a_stopping_worker():
    assert worker_shutting_down() is False
