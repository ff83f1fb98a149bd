"""Stage 4: the score cache. Same canonical text, same classifier -> same scores, no LLM call.

Scores are cached, not verdicts: thresholds apply after the cache, so a policy edit
takes effect at once and never invalidates what the LLM already said. The key holds
everything that changes the scores: the model, the prompt version, the canonical text
and the context.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from cachetools import LRUCache

from worker._outage import Outage

log = structlog.get_logger("worker.cache")


@dataclass(frozen=True, slots=True)
class CachedScores:
    scores: tuple[float, ...]  # in CATEGORIES order
    model: str

    def dumps(self) -> str:
        return json.dumps([self.model, self.scores], separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> CachedScores:
        model, scores = json.loads(raw)
        return cls(tuple(float(s) for s in scores), str(model))


def cache_key(model: str, prompt_version: str, canonical_text: str, context: str | None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (model, prompt_version, canonical_text, context or ""):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


class ScoreCache:
    """In-process LRU in front of an optional Redis shared by every pod."""

    def __init__(
        self,
        size: int,
        redis_url: str | None = None,
        ttl_s: int = 7 * 86400,
        redis_options: dict[str, Any] | None = None,
        redis_retry_s: float = 5.0,
    ) -> None:
        # entries as plain tuples of floats and a str, which the garbage collector stops
        # tracking: 100k dataclass instances would lengthen every full collection
        self._lru: LRUCache[str, tuple[tuple[float, ...], str]] = LRUCache(maxsize=max(size, 1))
        self._lock = threading.Lock()
        self._ttl_s = ttl_s
        self._redis: Any = None
        self._outage = Outage("score cache", redis_retry_s)  # after a failure
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                **(redis_options or {}),  # TLS: worker._tls.redis_ssl
            )

    def get_local(self, key: str) -> CachedScores | None:
        with self._lock:
            entry = self._lru.get(key)
        return None if entry is None else CachedScores(*entry)

    def get_many(self, keys: list[str]) -> dict[str, CachedScores]:
        """Local hits, then one Redis round trip for the rest; Redis trouble is a miss."""
        found: dict[str, CachedScores] = {}
        missing: list[str] = []
        with self._lock:
            for key in keys:
                entry = self._lru.get(key)
                if entry is None:
                    missing.append(key)
                else:
                    found[key] = CachedScores(*entry)
        if missing and self._redis is not None and self._outage.may_ask():
            try:
                values = self._redis.mget([f"mod:s:{k}" for k in missing])
            except Exception as exc:  # a cache outage must not stop moderation
                self._outage.failed(exc)
                return found
            self._outage.ok()
            with self._lock:
                for key, raw in zip(missing, values, strict=True):
                    if raw is not None:
                        hit = CachedScores.loads(raw)
                        found[key] = hit
                        self._lru[key] = (hit.scores, hit.model)
        return found

    def put_many(self, entries: dict[str, CachedScores]) -> None:
        if not entries:
            return
        with self._lock:
            self._lru.update((key, (v.scores, v.model)) for key, v in entries.items())
        if self._redis is not None and self._outage.may_ask():
            try:
                pipe = self._redis.pipeline(transaction=False)
                for key, value in entries.items():
                    pipe.set(f"mod:s:{key}", value.dumps(), ex=self._ttl_s)
                pipe.execute()
            except Exception as exc:
                self._outage.failed(exc)
