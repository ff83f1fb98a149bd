"""The LLM account's budget: local buckets, the endpoint's headers, Redis shared by pods."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker._rate_budget import RateBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_minutes_budget_is_a_burst_then_a_steady_rate():
    clock = Clock()
    budget = RateBudget(rpm=60, tpm=6000, clock=clock)
    assert all(budget.acquire(100, timeout=0) for _ in range(60))  # a full bucket
    assert not budget.acquire(100, timeout=0.5)  # the 61st request: a second away
    assert budget._try(100) == pytest.approx(1.0)
    clock.now += 1.0
    assert budget.acquire(100, timeout=0)
    clock.now += 60
    assert budget._try(10_000) == 0  # more than a minute's tokens: waits for a full bucket


def test_the_endpoints_headers_teach_and_correct_the_budget():
    clock = Clock()
    budget = RateBudget(rpm=None, tpm=None, clock=clock)
    assert not budget.active and budget.acquire(10**9, timeout=0)
    budget.observe({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "2"})
    assert budget.limits() == (500.0, 0.0)
    assert budget.acquire(1, timeout=0) and budget.acquire(1, timeout=0)
    assert budget._try(1) == pytest.approx(60 / 500)  # the server said 2 were left
    budget.observe({"x-ratelimit-remaining-requests": "400"})  # never raised by headers
    assert budget._try(1) > 0


def test_pods_share_one_budget_through_redis(local_redis):
    key = f"test:rate:{uuid.uuid4().hex[:8]}"
    pods = [RateBudget(rpm=30, tpm=None, redis=local_redis, key=key) for _ in range(3)]
    taken = sum(pod.acquire(1, timeout=0) for _ in range(20) for pod in pods)
    assert taken == 30  # not 3 x 30
    assert local_redis.pttl(f"{key}:requests") > 0  # bounded in time: keys expire
    local_redis.delete(f"{key}:requests", f"{key}:tokens")


def test_without_redis_each_process_takes_its_share():
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    clock = Clock()
    budget = RateBudget(rpm=40, tpm=None, redis=down, share=0.25, clock=clock)
    taken = sum(budget.acquire(1, timeout=0) for _ in range(40))
    assert taken == 10
    assert budget._redis_retry_at > clock.now  # and Redis is not asked at every call
