"""Ack windows and the cross-thread hand-off, on a fake channel (no broker)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from worker._acks import Acker, AckWindow


@dataclass
class FakeChannel:
    is_open: bool = True
    acks: list[tuple[int, bool]] = field(default_factory=list)

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))


@dataclass
class FakeMessage:
    channel: Any
    delivery_tag: Any
    acked: bool = False
    requeued: bool = False

    def ack(self) -> None:
        self.acked = True

    def reject(self, requeue: bool = False) -> None:
        self.requeued = requeue


def test_the_settled_prefix_goes_out_as_one_multiple_ack():
    channel = FakeChannel()
    window = AckWindow(channel, stragglers=10)
    for tag in range(1, 6):
        window.add(tag)
    for tag in (2, 1, 3):
        window.settle(tag)
    assert window.flush() == 1 and channel.acks == [(3, True)]
    window.settle(5)  # 4 still pending: 5 waits behind it
    assert window.flush() == 0
    window.settle(4)
    assert window.flush() == 1 and channel.acks[-1] == (5, True)


def test_a_rejected_tag_does_not_hold_the_prefix_and_is_not_acked():
    channel = FakeChannel()
    window = AckWindow(channel, stragglers=10)
    for tag in (1, 2, 3):
        window.add(tag)
    window.rejected(1)
    window.settle(2)
    window.settle(3)
    window.flush()
    assert channel.acks == [(3, True)]  # the broker acks 2 and 3; 1 was rejected already
    assert not window.settle(1)  # not held any more


def test_stragglers_behind_a_slow_tag_are_acked_one_by_one():
    channel = FakeChannel()
    window = AckWindow(channel, stragglers=2)
    for tag in range(1, 6):
        window.add(tag)
    for tag in (2, 3, 4):  # 1 is slow: three settled behind it, more than 2 stragglers
        window.settle(tag)
    window.flush()
    assert channel.acks == [(2, False), (3, False), (4, False)]
    window.settle(1)
    window.flush()
    assert channel.acks[-1] == (1, True)  # the prefix: only 1 is still outstanding


def test_the_acker_settles_from_any_thread_on_drain():
    channel = FakeChannel()
    acker = Acker(stragglers=64)
    messages = [FakeMessage(channel, tag) for tag in range(1, 101)]
    for message in messages:
        acker.received(message)
    threads = [threading.Thread(target=acker.settle, args=(messages[n::4], True)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert acker.drain() == 100
    assert channel.acks == [(100, True)]


def test_failed_outcomes_are_requeued_and_dead_channels_ignored():
    live, dead = FakeChannel(), FakeChannel()
    acker = Acker(stragglers=64)
    requeue = FakeMessage(live, 1)
    lost = FakeMessage(dead, 1)
    for message in (requeue, lost):
        acker.received(message)
    dead.is_open = False
    acker.settle([requeue], ok=False)
    acker.settle([lost], ok=True)
    assert acker.drain() == 2
    assert requeue.requeued and not lost.acked and dead.acks == []
    assert live.acks == []  # the rejected tag is not acked by a later prefix


def test_a_delivery_without_a_channel_settles_itself():
    acker = Acker(stragglers=64)
    task = FakeMessage(None, None)
    acker.received(task)
    acker.settle([task], ok=True)
    acker.drain()
    assert task.acked


def test_after_reset_old_tags_are_void():
    old = FakeChannel()
    acker = Acker(stragglers=64)
    message = FakeMessage(old, 1)
    acker.received(message)
    acker.reset()
    acker.settle([message], ok=True)
    acker.drain()
    assert message.acked and old.acks == []  # acked on its own, not through a window
