"""The private corners of kombu, py-amqp and Celery the runtime uses, each version-gated
with the public way beside it.

Each shortcut saves real work per message or answers a question the public API cannot;
each is taken only on the versions it was written and tested against
(``tests/unit/test_kombu_compat.py`` runs both ways), and anything else gets the public
path: slower, never wrong.
"""

from __future__ import annotations

import functools
import socket
from importlib import metadata
from typing import Any

_TESTED_KOMBU = ((5, 7), (6, 0))  # [from, to)


def _version(package: str) -> tuple[int, int]:
    try:
        major, minor = metadata.version(package).split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return (0, 0)


FAST_DELIVERIES = _TESTED_KOMBU[0] <= _version("kombu") < _TESTED_KOMBU[1]


class RawDelivery:
    """A received request: the few fields of kombu's ``Message`` the worker reads, built
    for a fraction of its cost (``Message`` copies and inspects headers and properties
    per message). Installed as a py-amqp channel's ``message_to_python``."""

    __slots__ = ("accept", "body", "channel", "delivery_info", "delivery_tag", "properties")
    errors = ()  # kombu's Consumer._receive_callback reads it

    def __init__(self, raw: Any, channel: Any) -> None:
        self.body = raw.body
        self.channel = channel
        self.delivery_tag = raw.delivery_tag
        self.delivery_info = raw.delivery_info
        self.properties = raw.properties
        self.accept = None

    @property
    def content_type(self) -> str | None:
        return self.properties.get("content_type")

    @property
    def content_encoding(self) -> str | None:
        return self.properties.get("content_encoding")

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.get("application_headers") or {}

    def ack(self) -> None:
        self.channel.basic_ack(self.delivery_tag)

    def reject(self, requeue: bool = False) -> None:
        self.channel.basic_reject(self.delivery_tag, requeue=requeue)


def raw_deliveries(channel: Any, fast: bool = FAST_DELIVERIES) -> Any:
    """``channel`` for a consumer of raw JSON: bodies stay bytes and deliveries are
    ``RawDelivery`` objects. py-amqp would decode bodies to str (content_encoding) only
    for validation to encode and decode them again. Public way: kombu's ``Message``,
    whose ``body`` the caller turns back into bytes."""
    if fast and hasattr(channel, "auto_decode") and hasattr(channel, "message_to_python"):
        channel.auto_decode = False
        channel.message_to_python = functools.partial(RawDelivery, channel=channel)
    return channel


def body_bytes(message: Any) -> bytes:
    """The delivery's body as the producer sent it (the public path decodes text)."""
    body = message.body
    if isinstance(body, str):  # py-amqp decoded it using content_encoding: undo that
        return body.encode(message.content_encoding or "utf-8", "surrogateescape")
    return body if type(body) is bytes else bytes(body)


def connection_socket(connection: Any) -> socket.socket | None:
    """The TCP socket under a kombu connection (to see bytes delivered and not yet read),
    or None where the transport does not expose one."""
    transport = getattr(connection, "connection", None)
    sock = getattr(transport, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def worker_shutting_down() -> bool:
    """Is Celery shutting the worker down (rather than restarting the consumer after a
    lost connection)? Read from ``celery.worker.state``; no public API says it."""
    try:
        from celery.worker import state
    except ImportError:  # pragma: no cover - Celery is a dependency
        return True
    # should_stop is the exit code, 0 for a warm shutdown: test it against None/False
    return any(
        flag is not None and flag is not False
        for flag in (state.should_stop, state.should_terminate)
    )


def on_confirms(channel: Any, on_ack: Any, on_nack: Any) -> None:
    """Have py-amqp call ``on_ack(tag, multiple)`` / ``on_nack(tag, multiple)`` for the
    broker's publisher confirms on ``channel`` (in confirm mode). py-amqp's own way
    (``channel.events``, which its docs show for confirms); kombu has no public one."""
    channel.events["basic_ack"].add(on_ack)
    channel.events["basic_nack"].add(on_nack)
