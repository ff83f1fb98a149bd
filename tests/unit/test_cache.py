"""The score cache's Redis tier: shared when up, skipped for a while when it hangs."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from worker.cache import CachedScores, ScoreCache

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server of this test's own, so it can be frozen (SIGSTOP) like a hung one."""
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield proc, url
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait(10)


def test_pods_share_scores_through_redis(redis_server):
    _, url = redis_server
    scores = CachedScores((0.1,) * 13, "m")
    ScoreCache(10, url).put_many({"k": scores})
    assert ScoreCache(10, url).get_many(["k", "other"]) == {"k": scores}


def test_a_hung_redis_costs_one_time_out_then_is_skipped_until_retried(redis_server):
    proc, url = redis_server
    cache = ScoreCache(10, url, redis_retry_s=1.0)
    cache.put_many({"k": CachedScores((0.2,) * 13, "m")})
    proc.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    assert cache.get_many(["a"]) == {}  # waits out the socket time-out once
    first = time.monotonic() - started
    started = time.monotonic()
    for n in range(20):  # a batch each: none waits for the hung server
        assert cache.get_many([f"b{n}"]) == {}
        cache.put_many({f"b{n}": CachedScores((0.3,) * 13, "m")})
    rest = time.monotonic() - started
    assert first >= 0.4 and rest < 0.2, (first, rest)
    proc.send_signal(signal.SIGCONT)
    time.sleep(1.0)  # the interval over: Redis is asked again
    ScoreCache(10, url).put_many({"z": CachedScores((0.4,) * 13, "m")})
    assert cache.get_many(["z"]).keys() == {"z"}
