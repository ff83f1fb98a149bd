"""Acks for deliveries whose outcome the broker has confirmed, sent from the event loop.

A request is acked only after its verdict (or dead letter) is confirmed, and the confirm
arrives on the publisher's thread while only the event loop thread may touch a consumer
channel. ``Acker.settle`` (any thread) queues the outcome; ``drain`` (the loop thread,
which the caller wakes) acks through each channel's ``AckWindow``: one ``multiple`` ack
for the settled prefix of the delivery tags rather than one frame per message.

Plain classes: no broker, no Celery; the channel is anything with ``basic_ack``.
"""

from __future__ import annotations

import queue
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from worker.models import Verdict
    from worker.validate import DeadLetter

log = structlog.get_logger("worker.acks")

_PENDING, _SETTLED, _SENT = 0, 1, 2


class Delivery(Protocol):
    """What the acker needs of a received message (kombu's, ours, a task's)."""

    channel: Any
    delivery_tag: Any

    def ack(self) -> None: ...

    def reject(self, requeue: bool = False) -> None: ...


class TaskDelivery:
    """A request that came as a Celery task: settled by resolving ``future`` with the
    published verdict (or dead letter) rather than by an AMQP ack, which is Celery's."""

    __slots__ = ("body", "channel", "delivery_tag", "future", "outcome", "published")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.channel = None
        self.delivery_tag = None
        self.future: Future[Verdict | DeadLetter] = Future()
        self.outcome: Verdict | DeadLetter | None = None

    def ack(self) -> None:
        if self.outcome is not None and not self.future.done():
            self.future.set_result(self.outcome)

    def reject(self, requeue: bool = False) -> None:
        if not self.future.done():
            self.future.set_exception(RuntimeError("the verdict could not be published"))


class AckWindow:
    """One consumer channel's unacknowledged delivery tags, in delivery order.

    ``flush`` acks the settled prefix with a single ``basic.ack(multiple=True)``; the
    broker then acks everything outstanding up to that tag, which is exactly the prefix
    (rejected or already acked tags are no longer outstanding). A slow batch holds the
    prefix back, so when more than ``stragglers`` settled tags wait behind it they are
    acked one by one: otherwise the prefetch window would fill and delivery would stop.
    """

    __slots__ = ("channel", "order", "settled", "state", "stragglers", "waiting")

    def __init__(self, channel: Any, stragglers: int) -> None:
        self.channel = channel
        self.order: deque[int] = deque()
        self.state: dict[int, int] = {}
        self.settled: list[int] = []  # settled since the prefix last caught up
        self.waiting = 0  # settled, not sent yet
        self.stragglers = stragglers

    def add(self, tag: int) -> None:
        self.order.append(tag)
        self.state[tag] = _PENDING

    def settle(self, tag: int) -> bool:
        """Mark ``tag`` for acking; False if this window does not hold it."""
        if self.state.get(tag) != _PENDING:
            return False
        self.state[tag] = _SETTLED
        self.settled.append(tag)
        self.waiting += 1
        return True

    def rejected(self, tag: int) -> None:
        if self.state.get(tag) == _PENDING:
            self.state[tag] = _SENT

    def flush(self) -> int:
        """Send what can be sent; returns the number of ack frames written."""
        order, state = self.order, self.state
        last = 0
        while order and state[order[0]] != _PENDING:
            tag = order.popleft()
            if state.pop(tag) == _SETTLED:
                last = tag
                self.waiting -= 1
        frames = 0
        if last:
            self.channel.basic_ack(last, multiple=True)
            frames += 1
        if self.waiting > self.stragglers:
            for tag in self.settled:  # not a walk over the whole window
                if state.get(tag) == _SETTLED:
                    self.channel.basic_ack(tag)
                    state[tag] = _SENT
                    frames += 1
            self.waiting = 0
        if self.waiting == 0:
            self.settled.clear()
        return frames


class Acker:
    """Every consumer channel's ``AckWindow``, and the hand-off from other threads.

    A delivery without a channel (a Celery task's, whose AMQP ack is Celery's) is
    settled by its own ``ack``/``reject``.
    """

    def __init__(self, stragglers: int) -> None:
        self.stragglers = stragglers
        self._windows: dict[int, AckWindow] = {}  # id(channel) -> its unacked tags
        self._settled: queue.SimpleQueue[tuple[list[Delivery], bool]] = queue.SimpleQueue()

    def reset(self) -> None:
        """A new connection: the old channels' tags are void (the broker requeued them)."""
        self._windows.clear()

    def received(self, message: Delivery) -> None:
        """Event loop thread: a delivery to be settled later."""
        channel = message.channel
        if channel is None:
            return
        window = self._windows.get(id(channel))
        if window is None or window.channel is not channel:
            window = self._windows[id(channel)] = AckWindow(channel, self.stragglers)
        window.add(message.delivery_tag)

    def settle(self, messages: list[Delivery], ok: bool) -> None:
        """Any thread: ack ``messages`` (their outcome is confirmed) or, if not ``ok``,
        requeue them."""
        self._settled.put((messages, ok))

    def drain(self) -> int:
        """Event loop thread: apply what was settled; returns how many messages."""
        settled = 0
        while True:
            try:
                messages, ok = self._settled.get_nowait()
            except queue.Empty:
                break
            for message in messages:
                self._apply(message, ok)
            settled += len(messages)
        for key, window in list(self._windows.items()):
            if not getattr(window.channel, "is_open", True):
                del self._windows[key]  # the broker requeued all of it already
                continue
            try:
                window.flush()
            except Exception as exc:  # channel gone: the broker redelivers it
                log.warning("settle_failed", error=type(exc).__name__)
                del self._windows[key]
        return settled

    def _apply(self, message: Delivery, ok: bool) -> None:
        channel = message.channel
        if channel is not None and not getattr(channel, "is_open", True):
            return  # its channel died: the broker redelivers it elsewhere
        window = self._windows.get(id(channel)) if channel is not None else None
        if window is not None and window.channel is not channel:
            window = None
        try:
            if ok:
                if window is None or not window.settle(message.delivery_tag):
                    message.ack()
            else:
                if window is not None:
                    window.rejected(message.delivery_tag)
                message.reject(requeue=True)
        except Exception as exc:  # channel gone: the broker redelivers it
            log.warning("settle_failed", error=type(exc).__name__)
