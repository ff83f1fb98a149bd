"""Publisher-confirmed publishing of raw request bodies, for tests and the benchmark."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import amqp

from worker._confirms import ConfirmTracker
from worker.testing._amqp_broker import BrokerAddress, close, drain

KEY_HEADER = "x-test-key"  # names a message in basic.return (which carries no tag)


@dataclass(slots=True)
class Outgoing:
    key: str  # what the caller tracks (a request id, a case name)
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)  # content_encoding...


class _Deadline(Exception):
    """The deadline passed while waiting: the stream stops, saying what it waited for."""


class _Pace:
    """When each send is due at ``rate``/s: ``t0 + (offset + n * stride) / rate``.

    Sends are scheduled, not spaced: one that is late does not push back the rest (the
    benchmark's open loop), except that with ``catch_up_s`` the schedule slips so that no
    more than that much is ever made up in a burst (after an outage, say).
    """

    def __init__(self, rate: float, t0: float, offset: int, stride: int, catch_up_s: float | None):
        self.rate, self.t0, self.offset, self.stride = rate, t0, offset, stride
        self.catch_up_s = catch_up_s
        self.n = 0
        self.late_max = 0.0

    def wait(self, connection: amqp.Connection, reading: bool) -> None:
        """Until the next send is due, reading confirms meanwhile when ``reading``."""
        due = self.t0 + (self.offset + self.n * self.stride) / self.rate
        self.n += 1
        now = time.monotonic()
        if due > now:
            if reading:
                drain(connection, min(due - now, 0.005))
                now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            return
        self.late_max = max(self.late_max, now - due)
        if self.catch_up_s is not None and now - due > self.catch_up_s:
            self.t0 += now - self.catch_up_s - due


@dataclass(slots=True)
class _Limits:
    """What one ``publish`` call holds every stream to."""

    window: int
    deadline: float
    room: Callable[[], bool] | None
    stamp: Callable[[bytes], bytes] | None


class _Stream:
    """One connection's share of the items, and what became of them."""

    def __init__(self, items: list[Outgoing], pace: _Pace | None, limits: _Limits) -> None:
        self.limits = limits
        self.todo: deque[Outgoing] = deque(items)
        self.failed: list[Outgoing] = []  # nacked or returned, to go again (retry)
        self.returned: set[str] = set()
        self.pace = pace
        self.sent = 0
        self.tracker = ConfirmTracker()  # one for every connection: fail_all() renumbers


class Producer:
    """Publishes raw bodies to a queue (or an exchange) with publisher confirms.

    ``retry`` (the reliability tests): with ``mandatory``, a message counts as confirmed
    only when the broker acked it and did not return it; anything nacked, returned or
    unconfirmed when the connection dropped is published again, on a new connection if
    need be (so an outage can create duplicates, never a gap). Without it (the benchmark):
    each message goes once and the counters say what became of it.

    ``publish`` paces (``rate``), caps the unconfirmed (``window`` per connection) and,
    with ``max_unanswered`` and ``answered``, publishes only while fewer than that many are
    unanswered (a closed loop); ``stamp`` rewrites each body just before it is published.
    """

    def __init__(
        self,
        broker_url: str,
        queue: str = "moderation.requests",
        *,
        exchange: str = "",
        retry: bool = True,
        mandatory: bool = True,
        connect_attempts: int = 1,
        connect_timeout: float = 3.0,
    ) -> None:
        self.address = BrokerAddress.parse(broker_url)
        self.exchange, self.routing_key = exchange, queue
        self.retry, self.mandatory = retry, mandatory
        self.connect_attempts, self.connect_timeout = connect_attempts, connect_timeout
        self.confirmed: set[str] = set()
        self.republished = 0
        self.connection_failures = 0
        self.first_failure_at: float | None = None
        self.error: str | None = None
        self.stats: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []

    @property
    def sent(self) -> int:
        """Publishes so far, republished ones included."""
        return sum(s.sent for s in self._streams)

    def publish(
        self,
        items: list[Outgoing],
        rate: float | None = None,
        window: int = 500,
        deadline_s: float = 120.0,
        *,
        connections: int = 1,
        catch_up_s: float | None = 0.1,
        max_unanswered: int = 0,
        answered: Callable[[], int] | None = None,
        stamp: Callable[[bytes], bytes] | None = None,
        start_delay_s: float = 0.0,
    ) -> set[str]:
        """Publish until every item is confirmed or ``deadline_s`` passes; returns the
        keys confirmed. ``connections`` > 1: item ``i`` goes on connection ``i % n``, each
        in a thread of its own, paced on one schedule. ``self.stats``: the counters."""
        t0 = time.monotonic() + start_delay_s
        deadline = t0 + deadline_s
        room = None
        if max_unanswered > 0 and answered is not None:
            room = lambda: self.sent - answered() < max_unanswered  # noqa: E731
        limits = _Limits(window, deadline, room, stamp)
        shares = [items[k::connections] for k in range(connections)]
        self._streams = [
            _Stream(share, _Pace(rate, t0, k, connections, catch_up_s) if rate else None, limits)
            for k, share in enumerate(shares)
            if share
        ]
        started = time.monotonic()
        if len(self._streams) == 1:
            self._stream(self._streams[0])
        else:
            threads = [
                threading.Thread(target=self._stream, args=(s,), daemon=True) for s in self._streams
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(deadline_s + 30)
        streams = self._streams
        self.stats = {
            "sent": sum(s.sent for s in streams),
            "acked": sum(s.tracker.acked for s in streams),
            "nacked": sum(s.tracker.nacked for s in streams),
            "unconfirmed": sum(s.tracker.outstanding for s in streams),
            "late_max_s": max((s.pace.late_max for s in streams if s.pace), default=0.0),
            "error": self.error,
            "first_send": t0,
            "duration_s": time.monotonic() - started,
        }
        with self._lock:
            return set(self.confirmed)

    # -- one connection's publishing (a thread each) ------------------------------------

    def _stream(self, stream: _Stream) -> None:
        while stream.todo and time.monotonic() < stream.limits.deadline:
            try:
                self._session(stream)
                return
            except _Deadline as exc:
                self.error = f"TimeoutError: {exc}"
                return
            except Exception as exc:  # the connection dropped
                if not self.retry:
                    self.error = f"{type(exc).__name__}: {exc}"
                    return
                with self._lock:
                    self.connection_failures += 1
                    if self.first_failure_at is None:
                        self.first_failure_at = time.monotonic()
                stream.todo.extendleft(stream.failed)  # unconfirmed at the drop: first
                stream.failed.clear()
                time.sleep(0.3)

    def _settled(self, stream: _Stream, item: Outgoing, ok: bool) -> None:
        if ok and item.key not in stream.returned:
            with self._lock:
                self.confirmed.add(item.key)
            return
        stream.returned.discard(item.key)  # nacked, or returned (no queue bound yet...)
        if self.retry:
            stream.failed.append(item)
            self.republished += 1

    def _session(self, stream: _Stream) -> None:
        """One connection's worth of publishing; raises when the connection drops."""
        connection = self.address.connect(self.connect_attempts, self.connect_timeout)
        try:
            channel = connection.channel()
            channel.confirm_select()
            tracker = stream.tracker
            channel.events["basic_ack"].add(tracker.on_ack)
            channel.events["basic_nack"].add(tracker.on_nack)
            channel.events["basic_return"].add(
                lambda exc, exchange, key, message: stream.returned.add(
                    _text((message.headers or {}).get(KEY_HEADER, ""))
                )
            )
            try:
                self._publish_all(connection, channel, stream)
            except Exception:
                if self.retry:  # all that is unconfirmed goes again (else: counted as such)
                    tracker.fail_all()
                raise
        finally:
            close(connection)

    def _publish_all(
        self, connection: amqp.Connection, channel: amqp.Channel, stream: _Stream
    ) -> None:
        tracker, todo = stream.tracker, stream.todo
        limits = stream.limits
        window, deadline, room, stamp = limits.window, limits.deadline, limits.room, limits.stamp
        while True:
            if stream.failed:  # nacked or returned: again, at the back
                todo.extend(stream.failed)
                stream.failed.clear()
            if not todo:
                if not tracker.outstanding or time.monotonic() >= deadline:
                    return
                drain(connection, 0.1)
                continue
            while tracker.outstanding >= window:
                drain(connection, 0.05)
                if time.monotonic() > deadline:
                    raise _Deadline("no publisher confirms")
            if stream.pace is not None:
                stream.pace.wait(connection, tracker.outstanding > 0)
            while room is not None and not room():  # closed loop: wait for verdicts
                if tracker.outstanding:
                    drain(connection, 0.001)
                else:
                    time.sleep(0.001)
                if time.monotonic() > deadline:
                    raise _Deadline("no verdicts came back")
            if time.monotonic() >= deadline:
                return
            item = todo.popleft()
            body = stamp(item.body) if stamp is not None else item.body
            properties = {
                "content_type": "application/json",
                "content_encoding": "utf-8",
                **item.properties,
            }
            properties = {k: v for k, v in properties.items() if v is not None}
            if self.mandatory:
                properties["application_headers"] = {KEY_HEADER: item.key}
            # opened first: if the publish raises, fail_all() fails it and it goes again
            group = tracker.group(1, partial(self._settled, stream, item))
            channel.basic_publish(
                amqp.Message(body, delivery_mode=2, **properties),
                exchange=self.exchange,
                routing_key=self.routing_key,
                mandatory=self.mandatory,
            )
            tracker.published(group)
            stream.sent += 1
            if stream.sent % 64 == 0:
                drain(connection, 0.0001)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
