"""A shared server (Redis) that failed is left alone for a while, not asked per batch.

The score cache and the signal counters are optional help: when Redis hangs, every
batch that asks it waits out a socket time-out (0.5 s) before going on without it. After
one failure they skip Redis for ``retry_s`` and then try once again, so an outage costs
one time-out per interval, and the log says so once per outage, not once per batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("worker.redis")


class Outage:
    def __init__(
        self, what: str, retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._down = False

    @property
    def down(self) -> bool:
        """The last attempt failed."""
        return self._down

    def may_ask(self) -> bool:
        with self._lock:
            return self._clock() >= self._retry_at

    def ok(self) -> None:
        if self._down:
            with self._lock:
                self._down = False
            log.info("redis_back", what=self.what)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = self._clock() + self.retry_s
            first, self._down = not self._down, True
        if first:
            log.warning(
                "redis_unavailable", what=self.what, error=type(exc).__name__, retry_s=self.retry_s
            )
