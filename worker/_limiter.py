"""How many LLM calls one process keeps in flight: as many as the endpoint serves well.

An endpoint that is slow or saturated should get fewer calls, not more time-outs and a
tripped breaker. ``AdaptiveLimit`` is additive-increase, multiplicative-decrease, as in
TCP: it starts low, grows by one per good call until the first sign of overload (slow
start), then by one per limit's worth of good calls; a rate limit, a time-out, a 5xx or
a first token that comes much later than usual (requests queueing at the server) cuts it
by a third, at most once per call duration, so one burst of failures is one cut.
"""

from __future__ import annotations

import threading
import time
from enum import Enum


class Signal(Enum):
    OK = "ok"  # answered in the usual time
    OVERLOAD = "overload"  # 429, 5xx, time-out, queueing: send fewer
    NEUTRAL = "neutral"  # says nothing about load (a bad request, a bad reply)


class AdaptiveLimit:
    def __init__(self, maximum: int, initial: int = 8, minimum: int = 1) -> None:
        self.maximum = max(maximum, 1)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = float(max(self.minimum, min(initial, self.maximum)))
        self._threshold = float(self.maximum)  # slow start until the first cut
        self._in_flight = 0
        self._cut_at = 0.0
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def available(self) -> int:
        """Calls that may start now."""
        return max(0, int(self.limit) - self._in_flight)

    @property
    def target(self) -> int:
        """Where the limit is headed: the maximum while starting (nothing has said the
        endpoint cannot take it), the limit itself once overload has cut it."""
        return int(max(self.limit, self._threshold))

    @property
    def at_minimum(self) -> bool:
        return self.limit <= self.minimum

    def acquire(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for room for one more call."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight >= int(self.limit):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._in_flight += 1
            return True

    def release(self, signal: Signal, call_s: float = 1.0) -> bool:
        """One call ended; ``call_s`` is a typical call's duration (the cut cool-down).
        True when this call cut the limit."""
        cut = False
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            if signal is Signal.OK:
                step = 1.0 if self.limit < self._threshold else 1.0 / self.limit
                self.limit = min(float(self.maximum), self.limit + step)
            elif signal is Signal.OVERLOAD:
                now = time.monotonic()
                if now - self._cut_at >= call_s:
                    self._cut_at = now
                    self.limit = max(float(self.minimum), self.limit * 2 / 3)
                    self._threshold = self.limit
                    cut = True
            self._cond.notify_all()
        return cut
