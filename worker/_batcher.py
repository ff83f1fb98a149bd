"""Micro-batches for the LLM: as large as the latency budget allows, started only when
the endpoint has room for another call.

A message that needs the LLM joins the forming batch. The batch is started when it is
full, when its oldest message has waited ``wait_s``, or at once while fewer than
``eager_below`` batches are running (light load waits for nothing), but only while
fewer batches run than the endpoint's call limit allows. When the endpoint is saturated
the forming batch keeps growing to full size and full batches queue in order, so a slow
endpoint gets fewer, fuller calls instead of more of them.

Single-threaded: the worker's event loop calls every method (the pool thread reports a
finished batch through the loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        start: Callable[[list[T]], None],
        size: Callable[[], int],
        slots: Callable[[], int],
        wait_s: float,
        eager_below: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = start
        self._size = size
        self._slots = slots
        self.wait_s = wait_s
        self.eager_below = eager_below
        self._clock = clock
        self._forming: list[T] = []
        self._formed_at = 0.0
        self._ready: deque[list[T]] = deque()
        self.running = 0  # batches started and not finished
        self.held = 0  # items added and not started

    def add(self, item: T) -> float | None:
        """Take one item; returns when ``poll`` should run next (None: no need)."""
        if not self._forming:
            self._formed_at = self._clock()
        self._forming.append(item)
        self.held += 1
        return self.poll()

    def alone(self, item: T) -> float | None:
        """Take an item that must be a batch of its own (a redelivery may be poison)."""
        self.held += 1
        self._ready.append([item])
        return self.poll()

    def poll(self) -> float | None:
        """Start what may start now; returns when to poll again for the forming batch
        (None when nothing waits on time: a finished batch polls when a slot frees)."""
        size = max(self._size(), 1)
        while len(self._forming) >= size:  # full (the size may have shrunk meanwhile)
            self._ready.append(self._forming[:size])
            self._forming = self._forming[size:]
        slots = self._slots()
        while self._ready and self.running < slots:
            self._launch(self._ready.popleft())
        if not self._forming or self._ready or self.running >= slots:
            return None
        due = self._formed_at + self.wait_s
        if self.running < self.eager_below or self._clock() >= due:
            self._launch(self._forming)
            self._forming = []
            return None
        return due

    def finished(self) -> float | None:
        """A started batch has ended: its slot is free."""
        self.running = max(0, self.running - 1)
        return self.poll()

    def flush(self) -> None:
        """Start everything held, slots or not (shutdown: finish what was received)."""
        if self._forming:
            self._ready.append(self._forming)
            self._forming = []
        while self._ready:
            self._launch(self._ready.popleft())

    def _launch(self, batch: list[T]) -> None:
        self.running += 1
        self.held -= len(batch)
        self._start(batch)
