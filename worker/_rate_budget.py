"""The LLM account's rate limits as a budget the calls wait for, not 429s to learn from.

OpenAI-style endpoints limit requests and tokens per minute (a tier-1 gpt-4o-mini
account: 500 RPM, 200k TPM) and count a request's tokens when it arrives: its prompt
plus the completion it asks for (``max_completion_tokens``). Both budgets are token
buckets refilled continuously, one minute's worth deep, as the endpoint keeps them. A
call takes one request and its tokens before it is sent, waiting until the buckets hold
them, so a burst above the budget queues here (and, behind the worker's pending cap,
in ``moderation.deferred``) instead of coming back as a storm of 429s.

The budget is ``MODERATION_LLM_RPM``/``MODERATION_LLM_TPM`` where set, and the
endpoint's own ``x-ratelimit-limit-*``/``remaining-*`` headers correct it after every
answer (and every 429): the server's bucket is the truth, ours a forecast. Their
``reset-*`` adds nothing to a bucket refilled continuously at a known limit. With
``MODERATION_REDIS_URL`` the buckets live in Redis (one Lua script takes from both
atomically, on the server's clock), so all pods share the account's budget; with Redis
away, each process falls back to buckets of its own at its share of the budget
(``MODERATION_LLM_BUDGET_SHARE``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("worker.classify")

KINDS = ("requests", "tokens")

# KEYS: the requests and tokens buckets; ARGV: their limits per minute (0: none), the
# tokens wanted. Returns 0 when taken, else the milliseconds until they will be there.
_TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local wanted = {1, tonumber(ARGV[3])}
local levels, waits = {}, 0
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit > 0 then
    local state = redis.call('HMGET', KEYS[i], 'level', 'stamp', 'limit')
    local level, stamp = tonumber(state[1]), tonumber(state[2])
    if level == nil or tonumber(state[3]) ~= limit then level, stamp = limit, now end
    level = math.min(limit, level + (now - stamp) * limit / 60000)
    levels[i] = level
    if level < wanted[i] then
      waits = math.max(waits, math.ceil((wanted[i] - level) * 60000 / limit))
    end
  end
end
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit > 0 then
    local level = levels[i]
    if waits == 0 then level = level - wanted[i] end
    redis.call('HSET', KEYS[i], 'level', level, 'stamp', now, 'limit', limit)
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
end
return waits
"""

# KEYS: a bucket; ARGV: the level the endpoint reported. Lowers ours to it.
_CAP = """
local level = tonumber(redis.call('HGET', KEYS[1], 'level'))
if level ~= nil and level > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'level', ARGV[1])
end
return 0
"""


_REDIS_RETRY_S = 5.0  # Redis failed: the local share, without asking it again, for this long


class _Bucket:
    __slots__ = ("level", "limit", "stamp")

    def __init__(self, limit: float, now: float) -> None:
        self.limit, self.level, self.stamp = limit, limit, now

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.stamp) * self.limit / 60)
        self.stamp = now

    def seconds_until(self, wanted: float) -> float:
        return max(0.0, wanted - self.level) * 60 / self.limit


class RateBudget:
    """Requests and tokens per minute, shared by every call of this process (and, with
    ``redis``, of every pod). ``None`` limits are unknown until the endpoint says."""

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        redis: Any = None,
        key: str = "mod:rate",
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        now = clock()
        # with Redis, these are only the fallback: this process's share of the budget
        self._scale = share if redis is not None else 1.0
        self._buckets: dict[str, _Bucket | None] = {
            kind: _Bucket(limit * self._scale, now) if limit else None
            for kind, limit in zip(KINDS, (rpm, tpm), strict=True)
        }
        self._redis = redis
        self._keys = [f"{key}:{kind}" for kind in KINDS]
        self._take = redis.register_script(_TAKE) if redis is not None else None
        self._cap = redis.register_script(_CAP) if redis is not None else None
        self._redis_down_logged = 0.0
        self._redis_retry_at = 0.0  # after a failure, Redis is asked again from then on
        self.waited_s = 0.0  # in all, for metrics and tests

    @property
    def active(self) -> bool:
        return any(bucket is not None for bucket in self._buckets.values())

    def limits(self) -> tuple[float, float]:
        """Requests and tokens per minute of the whole budget (0: none known)."""
        with self._lock:
            return tuple(  # type: ignore[return-value]
                bucket.limit / self._scale if bucket is not None else 0.0
                for bucket in self._buckets.values()
            )

    def acquire(self, tokens: int, timeout: float) -> bool:
        """Take one request and ``tokens`` tokens, waiting up to ``timeout`` s for them.
        False: not within ``timeout`` (nothing taken). Tokens beyond a whole minute's
        budget are taken as the whole budget: such a call can only wait for a full one."""
        if not self.active:
            return True
        started = self._clock()
        deadline = started + timeout
        while True:
            wait = self._try(tokens)
            if wait <= 0:
                self.waited_s += self._clock() - started
                return True
            now = self._clock()
            if now + wait > deadline:
                return False
            with self._lock:
                self._lock.wait(min(wait, 0.5))

    def _try(self, tokens: int) -> float:
        """0 when taken, else seconds to wait."""
        if self._take is not None and self._clock() >= self._redis_retry_at:
            rpm, tpm = self.limits()
            try:
                waits_ms = self._take(
                    keys=self._keys, args=[rpm, tpm, min(tokens, tpm) if tpm else tokens]
                )
                return float(waits_ms) / 1000
            except Exception as exc:  # Redis away: this process's own share for a while
                now = self._clock()
                self._redis_retry_at = now + _REDIS_RETRY_S
                if now - self._redis_down_logged > 30:
                    self._redis_down_logged = now
                    log.warning("rate_budget_local", error=type(exc).__name__, share=self._scale)
        return self._try_local(tokens)

    def _try_local(self, tokens: int) -> float:
        with self._lock:
            now = self._clock()
            wanted = {"requests": 1.0, "tokens": float(tokens)}
            waits = 0.0
            for kind, bucket in self._buckets.items():
                if bucket is None:
                    continue
                bucket.refill(now)
                waits = max(waits, bucket.seconds_until(min(wanted[kind], bucket.limit)))
            if waits > 0:
                return waits
            for kind, bucket in self._buckets.items():
                if bucket is not None:
                    bucket.level -= min(wanted[kind], bucket.limit)
            return 0.0

    def observe(self, headers: Mapping[str, str]) -> None:
        """The endpoint's ``x-ratelimit-*`` headers: its limits replace ours where we had
        none, and its remaining levels lower ours (never raise them: requests of ours
        may be in flight that it has not counted yet)."""
        for kind in KINDS:
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if limit is None and remaining is None:
                continue
            with self._lock:
                bucket = self._buckets[kind]
                now = self._clock()
                if bucket is None and limit:
                    bucket = self._buckets[kind] = _Bucket(limit * self._scale, now)
                    log.info("rate_budget_learned", kind=kind, per_minute=limit)
                if bucket is None or remaining is None:
                    continue
                bucket.refill(now)
                bucket.level = min(bucket.level, remaining * self._scale)
                self._lock.notify_all()
            if self._cap is not None:  # Redis away: the local bucket is capped anyway
                with contextlib.suppress(Exception):
                    self._cap(keys=[self._keys[KINDS.index(kind)]], args=[remaining])


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
