"""The Redis side of the signals: one Lua script that counts a whole batch.

Per tenant, three kinds of key, each a sorted set scored by the server's clock (ms):

- ``<prefix>:<tenant>:a:<author>``: one member per message of the author, for the
  messages in the last ``rate`` windows (ZCOUNT from each window's start);
- ``<prefix>:<tenant>:d:<text digest>``: one member per distinct author of that
  normalised text, scored by their latest copy, for a copy-paste wave;
- ``<prefix>:<tenant>:v:<author>``: one member per violation the author was given.

Counts are ZCOUNTs from a window's start, so members older than it need no removal:
each set keeps at most ``cap`` members (the newest; a count at the cap means "at
least") and expires one window after its last write, so memory is bounded by the
authors and texts active within the windows, ``cap`` members each. A batch is one EVALSHA, however
many messages it holds: the round trip is per batch, not per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# KEYS: per message, its author set, its text set and its violations set (an empty
# author: all three unused). ARGV: cap, the windows in ms (duplicate, history, then the
# rate windows), then per message a member id and the author id.
# Returns per message: {duplicate authors, violations, messages in each rate window}.
_COUNT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local cap = tonumber(ARGV[1])
local dup_ms, history_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local windows = {}
local nwin = tonumber(ARGV[4])
for w = 1, nwin do windows[w] = tonumber(ARGV[4 + w]) end
local longest = 0
for w = 1, nwin do longest = math.max(longest, windows[w]) end
local base = 4 + nwin
local out = {}
for i = 1, #KEYS / 3 do
  local member, author = ARGV[base + 2 * i - 1], ARGV[base + 2 * i]
  local row = {}
  if author == '' then
    row[1], row[2] = -1, -1
    for w = 1, nwin do row[2 + w] = -1 end
  else
    local ak, dk, vk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    if longest > 0 then
      redis.call('ZADD', ak, now, member)
      if redis.call('ZCARD', ak) > cap then redis.call('ZREMRANGEBYRANK', ak, 0, -cap - 1) end
      redis.call('PEXPIRE', ak, longest)
    end
    if dup_ms > 0 then
      redis.call('ZADD', dk, now, author)
      if redis.call('ZCARD', dk) > cap then redis.call('ZREMRANGEBYRANK', dk, 0, -cap - 1) end
      redis.call('PEXPIRE', dk, dup_ms)
      row[1] = redis.call('ZCOUNT', dk, now - dup_ms, '+inf')
    else
      row[1] = -1
    end
    row[2] = redis.call('ZCOUNT', vk, now - history_ms, '+inf')
    for w = 1, nwin do
      row[2 + w] = redis.call('ZCOUNT', ak, now - windows[w], '+inf')
    end
  end
  out[i] = row
end
return out
"""

# KEYS: violations sets; ARGV: cap, history window in ms, then a member id per key.
_VIOLATE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local cap, history_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[2 + i])
  if redis.call('ZCARD', KEYS[i]) > cap then
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -cap - 1)
  end
  redis.call('PEXPIRE', KEYS[i], history_ms)
end
return #KEYS
"""


class Counters:
    """The two scripts, registered once on a client; their keys under ``prefix``."""

    def __init__(self, redis: Any, prefix: str = "mod:sig") -> None:
        self.prefix = prefix
        self._redis = redis
        self._count = redis.register_script(_COUNT)
        self._violate = redis.register_script(_VIOLATE)

    def _key(self, tenant: str | None, kind: str, name: str) -> str:
        return f"{self.prefix}:{tenant or '_'}:{kind}:{name}"

    def count(
        self,
        rows: Sequence[tuple[str | None, str | None, str, str]],
        rate_ms: Sequence[int],
        duplicate_ms: int,
        history_ms: int,
        cap: int,
        violations: Sequence[tuple[str | None, str, str]] = (),
    ) -> list[list[int]]:
        """``rows``: (tenant, author, text digest, member id) per message. Per message:
        [distinct authors of the text, violations, messages per rate window]; -1 where
        the message has no author. ``violations`` (as for ``violate``) are recorded
        first, in the same round trip."""
        if violations:
            pipe = self._redis.pipeline(transaction=False)
            self.violate(violations, history_ms, cap, client=pipe)
            if rows:
                self.count_only(rows, rate_ms, duplicate_ms, history_ms, cap, client=pipe)
            done = pipe.execute()
            return self._rows(done[1]) if rows else []
        return self.count_only(rows, rate_ms, duplicate_ms, history_ms, cap)

    def count_only(
        self,
        rows: Sequence[tuple[str | None, str | None, str, str]],
        rate_ms: Sequence[int],
        duplicate_ms: int,
        history_ms: int,
        cap: int,
        client: Any = None,
    ) -> Any:
        keys: list[str] = []
        argv: list[Any] = [cap, duplicate_ms, history_ms, len(rate_ms), *rate_ms]
        for tenant, author, digest, member in rows:
            name = author or ""
            keys += [
                self._key(tenant, "a", name),
                self._key(tenant, "d", digest),
                self._key(tenant, "v", name),
            ]
            argv += [member, name]
        found = self._count(keys=keys, args=argv, client=client)
        return found if client is not None else self._rows(found)

    @staticmethod
    def _rows(found: Any) -> list[list[int]]:
        return [[int(n) for n in row] for row in found]

    def violate(
        self,
        rows: Sequence[tuple[str | None, str, str]],
        history_ms: int,
        cap: int,
        client: Any = None,
    ) -> None:
        """``rows``: (tenant, author, member id) per violation."""
        if rows:
            self._violate(
                keys=[self._key(tenant, "v", author) for tenant, author, _ in rows],
                args=[cap, history_ms, *(member for _, _, member in rows)],
                client=client,
            )
