"""The score cache's Redis tier: shared when up, skipped for a while when it hangs."""

from __future__ import annotations

import signal
import time

import pytest

from worker.cache import CachedScores, ScoreCache
from worker.testing.redis_server import available as redis_server_available

pytestmark = pytest.mark.skipif(not redis_server_available(), reason="no redis-server")


def test_pods_share_scores_through_redis(redis_server):
    url = redis_server.url
    scores = CachedScores((0.1,) * 13, "m")
    ScoreCache(10, url).put_many({"k": scores})
    assert ScoreCache(10, url).get_many(["k", "other"]) == {"k": scores}


def test_a_hung_redis_costs_one_time_out_then_is_skipped_until_retried(redis_server):
    url = redis_server.url
    cache = ScoreCache(10, url, redis_retry_s=1.0)
    cache.put_many({"k": CachedScores((0.2,) * 13, "m")})
    redis_server.freeze()
    started = time.monotonic()
    assert cache.get_many(["a"]) == {}  # waits out the socket time-out once
    first = time.monotonic() - started
    started = time.monotonic()
    for n in range(20):  # a batch each: none waits for the hung server
        assert cache.get_many([f"b{n}"]) == {}
        cache.put_many({f"b{n}": CachedScores((0.3,) * 13, "m")})
    rest = time.monotonic() - started
    assert first >= 0.4 and rest < 0.2, (first, rest)
    redis_server.proc.send_signal(signal.SIGCONT)
    time.sleep(1.0)  # the interval over: Redis is asked again
    ScoreCache(10, url).put_many({"z": CachedScores((0.4,) * 13, "m")})
    assert cache.get_many(["z"]).keys() == {"z"}
