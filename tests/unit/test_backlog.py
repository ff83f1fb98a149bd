"""What the backlog monitor reads: unread bytes on a socket (no broker needed)."""

from __future__ import annotations

import socket

from worker._backlog import _UNREAD_BACKLOG, QueueDepth, _unread


def test_unread_counts_bytes_waiting_without_consuming_them():
    a, b = socket.socketpair()
    with a, b:
        assert _unread(b) == 0
        a.sendall(b"x" * 5000)
        assert _unread(b) == 5000
        assert len(b.recv(10_000)) == 5000  # still all there to read
        assert _unread(b) == 0
    assert _unread(None) == 0 and _unread(b) == 0  # closed: unknown, not an error


def test_backlogged_when_a_batch_waits_in_the_queue_or_the_loop_is_behind_twice():
    depth = QueueDepth("amqp://nowhere", "q")
    assert not depth.backlogged(batch=64)
    depth.record(ready=65, unread=0)
    assert not depth.backlogged(batch=64)  # one look: a moment's burst
    depth.record(ready=0, unread=_UNREAD_BACKLOG + 1)
    assert depth.backlogged(batch=64)  # two in a row, in either place
    depth.record(ready=64, unread=0)
    assert not depth.backlogged(batch=64)
