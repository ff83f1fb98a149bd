"""Review verdicts decided one at a time, held a moment so their items travel together.

The rules and the fallback decide verdicts one by one, and each one the review store
records brought its own persistent publish of the item onto the quorum queue: with
every verdict a review that cost the verdict path a third of its throughput. Held up
to ``WAIT_S`` (or until ``GROUP`` items), the groups go out in one submission with one
review message; acks still wait for both the verdicts and their items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from worker.publish import OutMessage
from worker.reviews import ReviewItem

GROUP = 64  # review items per message, at most
WAIT_S = 0.005  # how long a held verdict waits for others

Reviews = list[tuple[ReviewItem, bytes | None]]  # items, with their verdict's JSON


@dataclass(slots=True)
class Held:
    """One published group: its messages out, its review items, its deliveries."""

    out: list[OutMessage]
    reviews: Reviews
    messages: list[Any]
    latencies: list[float]


class _Loop(Protocol):
    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...


class ReviewHold:
    """``add`` from any thread; ``submit`` gets the held groups merged, once they are
    ``GROUP`` items or ``WAIT_S`` old (``call_later`` runs on the loop thread only)."""

    def __init__(self, loop: _Loop, submit: Callable[[Held], None]) -> None:
        self.loop = loop
        self.submit = submit
        self._lock = threading.Lock()
        self._held: list[Held] = []
        self._items = 0
        self._armed = False

    def add(self, held: Held) -> None:
        with self._lock:
            self._held.append(held)
            self._items += len(held.reviews)
            full = self._items >= GROUP
            arm = not full and not self._armed
            self._armed = self._armed or arm
        if full:
            self.flush()
        elif arm:
            self.loop.call_soon(self._arm)

    def _arm(self) -> None:
        self.loop.call_later(WAIT_S, self.flush)

    def flush(self) -> None:
        """Any thread: submit what is held, as one group."""
        with self._lock:
            held, self._held = self._held, []
            self._items = 0
            self._armed = False
        if held:
            self.submit(
                Held(
                    [m for h in held for m in h.out],
                    [r for h in held for r in h.reviews],
                    [m for h in held for m in h.messages],
                    [x for h in held for x in h.latencies],
                )
            )


__all__ = ["GROUP", "WAIT_S", "Held", "ReviewHold", "Reviews"]
