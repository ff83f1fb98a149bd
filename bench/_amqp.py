"""Load-generator processes for the benchmark: a paced producer and a verdict collector.

Both use py-amqp directly (kombu's ``confirm_publish`` waits for every confirm, ~1.6k/s);
the producer keeps a window of unconfirmed publishes per connection and settles them
from the broker's (``multiple``) acks. Each runs in its own process so neither competes
with the other for the GIL; timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC is
system-wide on Linux, so send and receive times from different processes compare).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    userid: str
    password: str
    virtual_host: str

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        return cls(
            host=f"{parts.hostname}:{parts.port or 5672}",
            userid=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        )

    def connect(self, attempts: int = 10) -> amqp.Connection:
        """Connect, retrying for a while: the shared broker may be briefly unavailable."""
        for attempt in range(attempts):
            connection = amqp.Connection(
                host=self.host,
                userid=self.userid,
                password=self.password,
                virtual_host=self.virtual_host,
                heartbeat=0,
                connect_timeout=10,
            )
            try:
                connection.connect()
                return connection
            except (OSError, amqp.exceptions.AMQPError):
                if attempt == attempts - 1:
                    raise
                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise AssertionError("unreachable")


# -- producer ---------------------------------------------------------------------------


class _Confirms:
    """Unconfirmed delivery tags of one channel, settled by (multiple) acks and nacks."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.pending: collections.deque[int] = collections.deque()
        self.early: set[int] = set()
        self.acked = 0
        self.nacked = 0

    def sent(self) -> None:
        self.pending.append(self.next_tag)
        self.next_tag += 1

    def _settle(self, tag: int, multiple: bool, ok: bool) -> None:
        n = 0
        if multiple:
            while self.pending and self.pending[0] <= tag:
                t = self.pending.popleft()
                if t in self.early:
                    self.early.discard(t)
                    continue
                n += 1
        else:
            self.early.add(tag)
            n += 1
            while self.pending and self.pending[0] in self.early:
                self.early.discard(self.pending.popleft())
        if ok:
            self.acked += n
        else:
            self.nacked += n

    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, True)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, False)

    @property
    def outstanding(self) -> int:
        return len(self.pending) - len(self.early)


def _drain(connection: amqp.Connection, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):  # socket.timeout is TimeoutError
        connection.drain_events(timeout=timeout)


def _publisher_thread(
    address: BrokerAddress,
    bodies: list[tuple[int, bytes]],
    exchange: str,
    routing_key: str,
    t0: float,
    rate: float,
    window: int,
    stats: dict[str, Any],
    deadline: float,
    stamp: bool,
    room: Any = None,
    counter: list[int] | None = None,
) -> None:
    connection = address.connect()
    channel = connection.channel()
    confirms = _Confirms()
    channel.confirm_select()
    channel.events["basic_ack"].add(confirms.on_ack)
    channel.events["basic_nack"].add(confirms.on_nack)
    late_max = 0.0
    sent = 0
    try:
        for index, body in bodies:
            if rate > 0:
                due = t0 + index / rate
                now = time.monotonic()
                if due > now:
                    # wait for the slot, reading confirms meanwhile
                    if confirms.outstanding:
                        _drain(connection, min(due - now, 0.005))
                    now = time.monotonic()
                    if due > now:
                        time.sleep(due - now)
                else:
                    late_max = max(late_max, now - due)
            while room is not None and not room():  # closed loop: wait for verdicts
                if confirms.outstanding:
                    _drain(connection, 0.001)
                else:
                    time.sleep(0.001)
                if time.monotonic() > deadline:
                    raise TimeoutError("no verdicts came back")
            if stamp:  # the send time goes into metadata just before publishing
                body = body.replace(b'"t":0.0', b'"t":%r' % time.monotonic(), 1)
            channel.basic_publish(
                amqp.Message(
                    body, content_type="application/json", content_encoding="utf-8", delivery_mode=2
                ),
                exchange=exchange,
                routing_key=routing_key,
            )
            confirms.sent()
            sent += 1
            if counter is not None:
                counter[0] += 1
            while confirms.outstanding >= window:
                _drain(connection, 0.05)
                if time.monotonic() > deadline:
                    raise TimeoutError("no publisher confirms")
            if sent % 64 == 0:
                _drain(connection, 0.0001)
        while confirms.outstanding and time.monotonic() < deadline:
            _drain(connection, 0.1)
    finally:
        stats["sent"] += sent
        stats["acked"] += confirms.acked
        stats["nacked"] += confirms.nacked
        stats["unconfirmed"] += confirms.outstanding
        stats["late_max_s"] = max(stats["late_max_s"], late_max)
        with contextlib.suppress(Exception):
            connection.close()


def produce(
    broker_url: str,
    bodies: list[bytes],
    rate: float,
    connections: int,
    window: int,
    timeout_s: float,
    result: Any,
    exchange: str = "",
    routing_key: str = "moderation.requests",
    in_flight: int = 0,
    answered: Any = None,
) -> None:
    """Publish ``bodies`` (``"t":0.0`` replaced by the send time) at ``rate``/s (0: flood).

    ``in_flight`` > 0 (with ``answered``, the collector's shared count of verdicts):
    a closed loop, publishing only while fewer than that many are unanswered, so that
    producer, broker, workers and collector all run for the whole phase.
    """
    address = BrokerAddress.parse(broker_url)
    stats: dict[str, Any] = {
        "sent": 0,
        "acked": 0,
        "nacked": 0,
        "unconfirmed": 0,
        "late_max_s": 0.0,
        "error": None,
    }
    lock = threading.Lock()
    t0 = time.monotonic() + 0.05
    deadline = t0 + timeout_s
    shares: list[list[tuple[int, bytes]]] = [[] for _ in range(connections)]
    for index, body in enumerate(bodies):
        shares[index % connections].append((index, body))

    counters = [[0] for _ in range(connections)]

    def room() -> bool:
        return sum(c[0] for c in counters) - answered.value < in_flight

    def run(share: list[tuple[int, bytes]], counter: list[int]) -> None:
        local: dict[str, Any] = {
            "sent": 0,
            "acked": 0,
            "nacked": 0,
            "unconfirmed": 0,
            "late_max_s": 0.0,
        }
        try:
            _publisher_thread(
                address,
                share,
                exchange,
                routing_key,
                t0,
                rate,
                window,
                local,
                deadline,
                stamp=True,
                room=room if in_flight > 0 else None,
                counter=counter,
            )
        except Exception as exc:  # reported, never hidden
            stats["error"] = f"{type(exc).__name__}: {exc}"
        with lock:
            for key in ("sent", "acked", "nacked", "unconfirmed"):
                stats[key] += local[key]
            stats["late_max_s"] = max(stats["late_max_s"], local["late_max_s"])

    threads = [
        threading.Thread(target=run, args=(s, c), daemon=True)
        for s, c in zip(shares, counters, strict=True)
        if s
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 30)
    stats["first_send"] = t0
    stats["duration_s"] = time.monotonic() - start
    result.put(stats)


# -- verdict collector ------------------------------------------------------------------


def collect(
    broker_url: str,
    exchange: str,
    binding: str,
    prefix: str,
    expected: int,
    timeout_s: float,
    idle_s: float,
    ready: Any,
    result: Any,
    answered: Any = None,
) -> None:
    """Bind a queue to the verdicts, then record every verdict whose id starts with prefix.

    ``answered``: a shared counter of recorded verdicts, for a closed-loop producer.

    Record per id: (sent, received, source, prompt_tokens, completion_tokens, llm_calls,
    cost_usd, worker latency_ms).
    """
    gc.collect()
    gc.freeze()  # the measuring instrument: no full-collection pauses in its timestamps
    address = BrokerAddress.parse(broker_url)
    connection = address.connect()
    channel = connection.channel()
    queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
    channel.queue_bind(queue, exchange, binding)
    records: dict[str, tuple[Any, ...]] = {}
    stats = {"duplicates": 0, "foreign": 0, "unparsable": 0}
    prefix_b = prefix

    def on_message(message: amqp.Message) -> None:
        received = time.monotonic()
        try:
            verdict = json.loads(message.body)
            vid = verdict["id"]
        except Exception:
            stats["unparsable"] += 1
            return
        if not vid.startswith(prefix_b):
            stats["foreign"] += 1
            return
        if vid in records:
            stats["duplicates"] += 1
            return
        usage = verdict.get("usage") or {}
        sent = (verdict.get("metadata") or {}).get("t")
        records[vid] = (
            sent,
            received,
            verdict.get("source"),
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            usage.get("llm_calls", 0.0),
            verdict.get("cost_usd", 0.0),
            verdict.get("latency_ms"),
        )
        if answered is not None:
            answered.value = len(records)

    channel.basic_qos(0, 5000, False)
    channel.basic_consume(queue, no_ack=True, callback=on_message)
    ready.set()
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    seen = 0
    while len(records) < expected:
        now = time.monotonic()
        if now > deadline:
            stats["stopped"] = "timeout"
            break
        if records and now - last > idle_s:
            stats["stopped"] = f"idle {idle_s}s"
            break
        try:
            _drain(connection, 0.2)
        except (OSError, amqp.exceptions.AMQPError) as exc:
            stats["stopped"] = "connection lost"
            stats["error"] = (
                f"{type(exc).__name__}: {exc} (was RabbitMQ restarted by "
                "someone else, e.g. a reliability test?)"
            )
            break
        if len(records) != seen:
            seen = len(records)
            last = time.monotonic()
    with contextlib.suppress(Exception):
        connection.close()
    result.put((records, stats))


def queue_depths(broker_url: str, names: list[str]) -> dict[str, int | None]:
    address = BrokerAddress.parse(broker_url)
    connection = address.connect()
    out: dict[str, int | None] = {}
    try:
        for name in names:
            channel = connection.channel()
            try:
                _, count, _ = channel.queue_declare(name, passive=True)
                out[name] = count
                channel.close()
            except amqp.exceptions.NotFound:
                out[name] = None
    finally:
        connection.close()
    return out
