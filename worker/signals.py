"""Who wrote it and how often: per-author and per-text counts a policy can act on.

Text alone misses a flood from one account, the same text from forty accounts within a
minute, or an author's third violation today. ``SignalCounter`` asks Redis for those
counts for a whole batch in one round trip (``worker._counters`` holds the script and
the key layout) and remembers the violations it is told of.

Redis away is not a reason to hold a message: the counts are then absent (``None``),
the verdict can say so, and Redis is not asked again for a few seconds, so a dead
server costs one failed round trip per interval rather than one per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from worker._counters import Counters
from worker._outage import Outage

__all__ = ["Message", "SignalCounter", "Signals", "Windows"]


@dataclass(frozen=True, slots=True)
class Windows:
    """What is counted, and for how long: the windows the policy's conditions use."""

    rate_s: tuple[float, ...] = (10.0,)  # messages per author
    duplicate_s: float = 60.0  # distinct authors of one normalised text
    history_s: float = 86_400.0  # violations per author
    cap: int = 200  # members kept per key: counts at the cap mean "at least"


@dataclass(frozen=True, slots=True)
class Message:
    """What the counters need of one request: ``id`` makes a redelivery count once."""

    id: str
    tenant: str | None
    author: str | None
    normalised_text: str


@dataclass(frozen=True, slots=True)
class Signals:
    """One message's counts; ``None`` where the message has no author."""

    messages: dict[float, int] = field(default_factory=dict)  # per rate window (s)
    duplicate_authors: int | None = None
    violations: int | None = None


def digest(normalised_text: str) -> str:
    """A short, stable name for a text in a key (never the text itself)."""
    return hashlib.blake2b(normalised_text.encode("utf-8"), digest_size=12).hexdigest()


class SignalCounter:
    def __init__(self, client: Any, prefix: str = "mod:sig", retry_s: float = 5.0) -> None:
        self._client = client
        self._counters = Counters(client, prefix)
        self._outage = Outage("signals", retry_s)
        self.round_trips = 0  # for the benchmark: one per batch

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any] | None = None) -> SignalCounter:
        # short time-outs: a batch waits for the counts, and a hung Redis is skipped
        return cls(
            redis.Redis.from_url(
                url, socket_timeout=0.25, socket_connect_timeout=0.25, **(options or {})
            )
        )

    @property
    def available(self) -> bool:
        """Whether the last round trip worked (or none failed yet)."""
        return not self._outage.down

    def observe(
        self,
        batch: Sequence[Message],
        windows: Windows | None = None,
        violations: Sequence[Message] = (),
    ) -> list[Signals | None]:
        """Record ``violations`` (messages whose verdict counts against their author),
        then count each message of ``batch`` in and return its signals, all in one
        round trip; ``None`` for every message when Redis cannot be asked (and the
        violations are lost: a history is a hint, not a ledger)."""
        w = windows or Windows()
        rows = [(m.tenant, m.author, digest(m.normalised_text), m.id) for m in batch]
        bad = [(m.tenant, m.author, m.id) for m in violations if m.author]
        if not rows and not bad:
            return []
        if not self._outage.may_ask():
            return [None] * len(batch)
        try:
            self.round_trips += 1
            counts = self._counters.count(
                rows,
                rate_ms=[round(s * 1000) for s in w.rate_s],
                duplicate_ms=round(w.duplicate_s * 1000),
                history_ms=round(w.history_s * 1000),
                cap=w.cap,
                violations=bad,
            )
        except (redis.RedisError, OSError) as exc:  # the signals are absent
            self._outage.failed(exc)
            return [None] * len(batch)
        self._outage.ok()
        return [self._signals(row, w) for row in counts]

    def record_violations(self, batch: Sequence[Message], windows: Windows | None = None) -> bool:
        """Only record violations; False when Redis could not be told."""
        self.observe([], windows, batch)
        return not self._outage.down

    @staticmethod
    def _signals(row: list[int], w: Windows) -> Signals:
        duplicate, violations, *per_window = row
        if violations < 0:
            return Signals()
        return Signals(
            messages=dict(zip(w.rate_s, per_window, strict=True)),
            duplicate_authors=duplicate if duplicate >= 0 else None,
            violations=violations,
        )
