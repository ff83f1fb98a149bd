"""Micro-batches for the LLM: as large as the latency budget allows, started only when
the endpoint has room for another call.

A message that needs the LLM waits in arrival order. A batch of ``size()`` (what the
latency budget allows) starts as soon as that many wait, a smaller one when its oldest
message has waited ``wait_s()``, or at once while fewer than ``eager_below`` batches run
(light load waits for nothing); but only while fewer batches run than the endpoint's
call limit (``slots()``). When more wait than all the slots could take at that size,
the messages are waiting for a slot anyway: their latency is no longer the call's, so
the batches grow (up to ``largest()``: the full batch the endpoint can answer within a
call's time-out) and the endpoint gets fewer, fuller calls instead of more of them.
Measured against the free slots instead, a moment's stall of the endpoint (every slot
busy for a second) made one batch of everything that waited: a call several times the
budget, for messages that a freed slot would have taken a moment later.

Single-threaded: the worker's event loop calls every method (the pool thread reports a
finished batch through the loop).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        start: Callable[[list[T]], object],  # its result is ignored
        size: Callable[[], int],
        slots: Callable[[], int],
        wait_s: Callable[[], float],
        largest: Callable[[], int],
        eager_below: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = start
        self._size = size
        self._slots = slots
        self._wait_s = wait_s
        self._largest = largest
        self.eager_below = eager_below
        self._clock = clock
        self._waiting: deque[tuple[float, T]] = deque()  # (arrived, item), oldest first
        self._alone: deque[T] = deque()  # items that go in a batch of their own
        self.running = 0  # batches started and not finished

    @property
    def held(self) -> int:
        """Items added and not started."""
        return len(self._waiting) + len(self._alone)

    def add(self, item: T) -> float | None:
        """Take one item; returns when ``poll`` should run next (None: no need)."""
        self._waiting.append((self._clock(), item))
        return self.poll()

    def alone(self, item: T) -> float | None:
        """Take an item that must be a batch of its own (a redelivery may be poison)."""
        self._alone.append(item)
        return self.poll()

    def poll(self) -> float | None:
        """Start what may start now; returns when to poll again for a partial batch
        (None when nothing waits on time: a finished batch polls when a slot frees)."""
        slots = self._slots()
        while self._alone and self.running < slots:
            self._launch([self._alone.popleft()])
        while self._waiting and self.running < slots:
            size = max(self._size(), 1)
            free = slots - self.running
            if len(self._waiting) > slots * size:  # more than every slot takes: grow
                largest = max(self._largest(), 1)
                size = min(largest, max(size, math.ceil(len(self._waiting) / free)))
            if len(self._waiting) < size:
                due = self._waiting[0][0] + self._wait_s()
                if self.running >= self.eager_below and self._clock() < due:
                    return due
            self._launch([self._waiting.popleft()[1] for _ in range(min(size, len(self._waiting)))])
        return None

    def finished(self) -> float | None:
        """A started batch has ended: its slot is free."""
        self.running = max(0, self.running - 1)
        return self.poll()

    def flush(self) -> None:
        """Start everything held, slots or not (shutdown: finish what was received)."""
        while self._alone:
            self._launch([self._alone.popleft()])
        while self._waiting:
            size = max(self._size(), 1)
            self._launch([self._waiting.popleft()[1] for _ in range(min(size, len(self._waiting)))])

    def _launch(self, batch: list[T]) -> None:
        self.running += 1
        self._start(batch)
