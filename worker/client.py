"""A small client for producers and verdict consumers (Python; other languages need only
the JSON Schemas and the queue names in the README).

    from worker.client import ModerationClient

    with ModerationClient("amqp://guest:guest@localhost//") as client:
        with client.subscribe("block.#") as verdicts:   # bind before publishing
            client.publish({"id": "42", "text": "hello"})
            verdict = verdicts.get(timeout=10)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kombu import Connection, Exchange, Producer, Queue

from worker import topology
from worker._tls import broker_ssl
from worker.models import ModerationRequest, Verdict
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    body: bytes
    reason: str
    error: str
    headers: dict[str, Any]


class Subscription:
    """An exclusive queue bound to the verdict exchange; ``get`` returns parsed verdicts."""

    def __init__(self, connection: Connection, queue: Queue) -> None:
        self._simple = connection.SimpleQueue(queue)

    def get(self, timeout: float = 10.0) -> Verdict:
        message = self._simple.get(block=True, timeout=timeout)
        message.ack()
        return Verdict.model_validate_json(message.body)

    def drain(self, count: int, timeout: float = 30.0) -> list[Verdict]:
        return [self.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self._simple.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModerationClient:
    def __init__(self, broker_url: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        url = broker_url or self.settings.broker_url
        self._connection = Connection(
            url,
            transport_options={"confirm_publish": True},
            ssl=broker_ssl(self.settings, url),
        )
        with self._connection.channel() as channel:
            topology.declare_all(channel, self.settings)
        self._producer = Producer(self._connection.channel())

    def publish(self, request: ModerationRequest | dict[str, Any]) -> None:
        """Publish one request, persistent, confirmed by the broker before returning."""
        if isinstance(request, ModerationRequest):
            body = request.model_dump_json(exclude_none=True).encode()
        else:
            body = json.dumps(request, ensure_ascii=False).encode()
        self.publish_raw(body)

    def publish_many(self, requests: Iterable[ModerationRequest | dict[str, Any]]) -> int:
        count = 0
        for request in requests:
            self.publish(request)
            count += 1
        return count

    def publish_raw(
        self,
        body: bytes,
        content_type: str = "application/json",
        content_encoding: str = "utf-8",
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Any bytes at all (tests use it for bad input); still confirmed and mandatory."""
        self._producer.publish(
            body,
            exchange="",
            routing_key=self.settings.requests_queue,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers or {},
            delivery_mode=2,
            mandatory=True,
            retry=True,
        )

    def subscribe(self, binding: str = "#", name: str | None = None) -> Subscription:
        """Bind a queue for verdicts matching ``binding`` (e.g. ``block.#``, ``#.hate``)."""
        exchange = Exchange(
            self.settings.verdicts_exchange,
            type="topic",
            durable=True,
            arguments={"alternate-exchange": topology.UNROUTED_EXCHANGE},
        )
        queue = Queue(
            name or f"moderation.verdicts.client.{uuid.uuid4().hex[:12]}",
            exchange=exchange,
            routing_key=binding,
            exclusive=name is None,
            auto_delete=name is None,
            durable=name is not None,
        )
        return Subscription(self._connection, queue)

    def dead_letters(self, timeout: float = 1.0) -> Iterator[DeadLetterRecord]:
        """Take dead letters off ``moderation.dead`` until none arrives for ``timeout``.

        Bodies are the original bytes, so they are read raw, never decoded.
        """
        with self._connection.channel() as channel:
            queue = topology.dead_queue(self.settings)(channel)
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < timeout:
                message = queue.get(no_ack=False)
                if message is None:
                    time.sleep(0.05)
                    continue
                quiet_since = time.monotonic()
                headers = dict(message.headers or {})
                body = message.body
                message.ack()
                yield DeadLetterRecord(
                    body=body if isinstance(body, bytes) else body.encode(),
                    reason=_text(
                        headers.get("x-moderation-reason")
                        or headers.get("x-first-death-reason")
                        or "unknown"
                    ),
                    error=_text(headers.get("x-moderation-error") or ""),
                    headers=headers,
                )

    def close(self) -> None:
        self._connection.release()

    def __enter__(self) -> ModerationClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
