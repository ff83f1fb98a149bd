"""Collecting verdicts and dead letters off the broker, in a thread of its own."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import amqp
from kombu import Queue

from worker import topology
from worker.models import Verdict
from worker.settings import Settings
from worker.testing._amqp_broker import BrokerAddress, close, drain

V = TypeVar("V")
QUORUM = {"x-queue-type": "quorum"}
Parse = Callable[[bytes], tuple[str, V]]  # a verdict body -> (its id, what to keep)


def parse_verdict(body: bytes) -> tuple[str, Verdict]:
    """The full model: what the tests check (raises on anything that is not a verdict)."""
    verdict = Verdict.model_validate_json(body)
    return verdict.id, verdict


def parse_json(body: bytes) -> tuple[str, dict[str, Any]]:
    """Plain JSON, a few times cheaper: what the benchmark's collector can afford."""
    verdict = json.loads(body)
    vid = verdict["id"]
    if not isinstance(vid, str):
        raise TypeError("id is not a string")
    return vid, verdict


@dataclass(slots=True)
class DeadRecord:
    body: bytes  # the original bytes, unchanged
    reason: str
    error: str
    headers: dict[str, Any]
    request_id: str | None = None  # the body's "id", when the body has one


def request_id(body: bytes) -> str | None:
    """The ``id`` of a JSON object body, if it has a string one."""
    if len(body) > 300_000:  # nothing that large is parsed by the worker either
        return None
    try:
        value = json.loads(body).get("id")
    except Exception:  # not JSON, not an object, too deep...
        return None
    return value if isinstance(value, str) else None


class VerdictCollector(Generic[V]):
    """Consumes the verdict exchange (a queue bound ``binding``) and, with ``dead_letters``,
    ``moderation.dead``; records what arrives per id, with its arrival time.

    ``durable`` (the reliability tests): a quorum queue of its own, acked message by
    message, and the thread reconnects after a broker outage, so nothing published while
    it is away is missed; ``stop`` deletes the queue. Otherwise (the benchmark): an
    exclusive queue, no acks, and a lost connection ends collection (``error``).

    Only ids starting with ``prefix`` are kept (the rest are counted, ``foreign``);
    ``on_new_id(n)`` runs on the collector thread as the n-th distinct id arrives.
    """

    def __init__(
        self,
        broker_url: str,
        settings: Settings | None = None,
        *,
        parse: Parse[V] = parse_verdict,  # type: ignore[assignment]
        binding: str = "#",
        durable: bool = True,
        queue_name: str | None = None,
        dead_letters: bool = True,
        prefix: str = "",
        prefetch: int = 2000,
        connect_attempts: int = 1,
        on_new_id: Callable[[int], None] | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(broker_url)
        self.settings = settings or Settings(broker_url=broker_url)
        self.parse, self.binding, self.durable = parse, binding, durable
        self.queue_name = queue_name or f"test.verdicts.{uuid.uuid4().hex[:8]}"
        self.dead_letters, self.prefix, self.prefetch = dead_letters, prefix, prefetch
        self.connect_attempts, self.on_new_id = connect_attempts, on_new_id
        self.lock = threading.Lock()  # taken for every record; hold it to read consistently
        self.verdicts: list[V] = []
        self.by_id: dict[str, list[V]] = {}
        self.first_at: dict[str, float] = {}  # time.monotonic() of each id's first verdict
        self.dead: list[DeadRecord] = []
        self.bad: list[str] = []  # verdict bodies that did not parse
        self.foreign = 0
        self.reconnects = 0
        self.error: str | None = None
        self.stopped: str | None = None  # why the last wait_for gave up
        self._dead_by_id: dict[str, list[DeadRecord]] = {}
        self._arrivals: list[str] = []  # ids of first verdicts and of dead letters, in order
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verdict-collector", daemon=True)

    # -- running ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> VerdictCollector[V]:
        """Returns once consuming (so bind-before-publish holds), else raises."""
        self._thread.start()
        if not self._ready.wait(timeout) or (not self.durable and self.error):
            raise TimeoutError(f"collector did not connect: {self.error}")
        return self

    def __enter__(self) -> VerdictCollector[V]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            connection: amqp.Connection | None = None
            try:
                connection = self.address.connect(self.connect_attempts, 3.0)
                self._consume(connection.channel())
                self._ready.set()
                while not self._stop.is_set():
                    drain(connection, 0.2)
            except Exception as exc:  # broker gone
                if self._stop.is_set():
                    return
                self.error = f"{type(exc).__name__}: {exc}"
                if not self.durable:  # an exclusive queue died with its connection
                    self._ready.set()  # (start() then raises at once, if it still waits)
                    return
                self.reconnects += 1
                time.sleep(0.5)
            finally:
                if connection is not None:
                    close(connection)

    def _consume(self, channel: amqp.Channel) -> None:
        channel.auto_decode = False  # bodies as the bytes that were sent
        topology.verdicts_exchange(self.settings)(channel).declare()
        if self.durable:
            name = _declare(channel, Queue(self.queue_name, durable=True, queue_arguments=QUORUM))
        else:
            name, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        channel.queue_bind(name, self.settings.verdicts_exchange, self.binding)
        channel.basic_qos(0, self.prefetch, False)
        channel.basic_consume(name, no_ack=not self.durable, callback=self._on_verdict)
        if self.dead_letters:
            _declare(channel, topology.dead_queue(self.settings))
            channel.basic_qos(0, 500, False)
            channel.basic_consume(self.settings.dead_queue, callback=self._on_dead)

    def _on_verdict(self, message: amqp.Message) -> None:
        received = time.monotonic()
        body = _bytes(message.body)
        try:
            vid, value = self.parse(body)
        except Exception:
            with self.lock:
                self.bad.append(body[:200].decode(errors="replace"))
        else:
            if vid.startswith(self.prefix):
                with self.lock:
                    self.verdicts.append(value)
                    copies = self.by_id.setdefault(vid, [])
                    copies.append(value)
                    if len(copies) == 1:
                        self.first_at[vid] = received
                        self._arrivals.append(vid)
                        if self.on_new_id is not None:
                            self.on_new_id(len(self.by_id))
            else:
                self.foreign += 1
        if self.durable:
            message.channel.basic_ack(message.delivery_tag)

    def _on_dead(self, message: amqp.Message) -> None:
        headers = dict(message.headers or {})
        body = _bytes(message.body)
        reason = headers.get("x-moderation-reason") or headers.get("x-first-death-reason")
        record = DeadRecord(
            body=body,
            reason=_text(reason or ""),
            error=_text(headers.get("x-moderation-error") or ""),
            headers=headers,
            request_id=request_id(body),
        )
        with self.lock:
            self.dead.append(record)
            if record.request_id is not None:
                self._dead_by_id.setdefault(record.request_id, []).append(record)
                self._arrivals.append(record.request_id)
        message.channel.basic_ack(message.delivery_tag)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if not self.durable:
            return
        try:
            connection = self.address.connect(2, 3.0)
            try:
                connection.channel().queue_delete(self.queue_name)
            finally:
                close(connection)
        except Exception:
            pass  # the vhost is deleted at the end of the session anyway

    # -- reading the results ------------------------------------------------------------

    def dead_by_id(self) -> dict[str, list[DeadRecord]]:
        with self.lock:
            return {k: list(v) for k, v in self._dead_by_id.items()}

    def resolved(self, ids: set[str]) -> set[str]:
        """Those of ``ids`` that have a verdict or a dead letter."""
        with self.lock:
            return {i for i in ids if i in self.by_id or i in self._dead_by_id}

    def wait_for(
        self, ids: set[str], timeout: float, idle_s: float | None = None, poll_s: float = 0.05
    ) -> set[str]:
        """Wait until every id is resolved; returns the unresolved ones (and says why in
        ``stopped``): at ``timeout``, after ``idle_s`` without a new one (once any came),
        or when a non-durable collector lost its connection. Each look every ``poll_s``
        costs only what arrived since the last, however many ids are awaited."""
        deadline = time.monotonic() + timeout
        with self.lock:  # one look: an id arriving between two would be missed for good
            missing = {i for i in ids if i not in self.by_id and i not in self._dead_by_id}
            seen = len(self._arrivals)
        last = time.monotonic()
        self.stopped = None
        while missing:
            time.sleep(poll_s)
            with self.lock:
                new = self._arrivals[seen:]
                seen = len(self._arrivals)
            now = time.monotonic()
            if new:
                missing.difference_update(new)
                last = now
            if now > deadline:
                self.stopped = "timeout"
            elif idle_s is not None and len(ids) > len(missing) and now - last > idle_s:
                self.stopped = f"idle {idle_s}s"
            elif not self._thread.is_alive() and not self._stop.is_set():
                self.stopped = "connection lost"
            else:
                continue
            break
        return missing

    def settle(self, quiet_s: float = 1.0, timeout: float = 10.0) -> None:
        """Wait until nothing new has arrived for ``quiet_s`` (late duplicates)."""
        deadline = time.monotonic() + timeout
        last = (-1, -1)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            now = (len(self.verdicts), len(self.dead))
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.1)


def _declare(channel: amqp.Channel, queue: Queue) -> str:
    """A kombu queue of the topology, declared on a plain py-amqp channel (kombu's own
    ``declare`` wants its transport's channel)."""
    channel.queue_declare(
        queue.name,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
        arguments=queue.queue_arguments,  # type: ignore[attr-defined]  # set in __init__
    )
    return str(queue.name)


def _bytes(body: bytes | str) -> bytes:
    return body if isinstance(body, bytes) else body.encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
