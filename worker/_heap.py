"""Short garbage-collector pauses: the long-lived heap is frozen out of full collections.

A worker's heap is mostly code and startup state (Celery, kombu, the openai client,
pydantic models, the compiled policy: ~100-160k objects) that never becomes garbage, yet
every full collection walked all of it: stop-the-world pauses of 40-100 ms every few
seconds under load, which the event loop, the pool threads and the publisher all wait
out, and the largest part of the p99 latency (measured with ``bench/run.py``).
``gc.freeze()`` moves what exists into a generation the collector skips; it runs once at
start and once more after the first LLM batch, whose imports and lazily built models
are the rest of that state. Reference counting still frees frozen objects as usual.
"""

from __future__ import annotations

import gc
import threading

import structlog

log = structlog.get_logger("worker.heap")


class HeapFreezer:
    """``freeze()`` at start; ``after_batch()`` from any thread, freezes once more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending_batches = 1

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        log.info("heap_frozen", objects=gc.get_freeze_count())

    def after_batch(self) -> None:
        if self._pending_batches <= 0:  # the common case: no lock
            return
        with self._lock:
            if self._pending_batches <= 0:
                return
            self._pending_batches -= 1
        self.freeze()
