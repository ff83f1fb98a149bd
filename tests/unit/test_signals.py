"""The signal counters against the real Redis on the machine (each test under a key
prefix of its own), and against a port where nothing listens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.signals import Message, SignalCounter, Windows


@pytest.fixture
def prefix(local_redis: redis.Redis) -> Iterator[str]:
    prefix = f"test:sig:{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in local_redis.scan_iter(f"{prefix}:*"):
        local_redis.delete(key)


def msg(n: int | str, author: str | None, text: str = "hello", tenant: str = "t") -> Message:
    return Message(id=str(n), tenant=tenant, author=author, normalised_text=text)


def test_a_flood_from_one_author_is_counted_per_window(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix)
    windows = Windows(rate_s=(1.0, 10.0))
    signals = counter.observe([msg(n, "alice", f"text {n}") for n in range(12)], windows)
    assert [s.messages[10.0] for s in signals] == list(range(1, 13))  # type: ignore[union-attr]
    (other,) = counter.observe([msg("b1", "bob", "text x")], windows)
    assert other is not None and other.messages == {1.0: 1, 10.0: 1}
    time.sleep(1.1)
    (later,) = counter.observe([msg(99, "alice", "again")], windows)
    assert later is not None and later.messages == {1.0: 1, 10.0: 13}


def test_a_redelivered_message_counts_once(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix=prefix)
    counter.observe([msg(1, "alice")])
    (again,) = counter.observe([msg(1, "alice")])
    assert again is not None and again.messages[10.0] == 1


def test_a_copy_paste_wave_counts_distinct_authors_of_the_same_text(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix=prefix)
    wave = counter.observe([msg(n, f"user{n}", "buy cheap followers") for n in range(30)])
    assert wave[-1] is not None and wave[-1].duplicate_authors == 30
    # one author repeating themselves is a flood, not a wave
    repeats = counter.observe([msg(f"r{n}", "carol", "my own words") for n in range(5)])
    assert repeats[-1] is not None and repeats[-1].duplicate_authors == 1
    # and another tenant's copies are not this tenant's wave
    (elsewhere,) = counter.observe([msg("x", "user1", "buy cheap followers", tenant="u")])
    assert elsewhere is not None and elsewhere.duplicate_authors == 1


def test_violations_are_remembered_per_author(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix=prefix)
    for n in range(3):
        assert counter.record_violations([msg(f"v{n}", "mallory")])
    (third,) = counter.observe([msg("next", "mallory", "anything")])
    (clean,) = counter.observe([msg("n2", "alice", "anything")])
    assert third is not None and third.violations == 3
    assert clean is not None and clean.violations == 0


def test_a_message_without_an_author_has_no_author_signals(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix=prefix)
    (signals,) = counter.observe([msg(1, None)])
    assert signals is not None
    assert signals.messages == {} and signals.duplicate_authors is None
    assert signals.violations is None
    assert list(local_redis.scan_iter(f"{prefix}:*")) == []


def test_memory_is_bounded_by_a_cap_per_key_and_expiry(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix)
    windows = Windows(rate_s=(2.0,), duplicate_s=2.0, history_s=2.0, cap=50)
    signals = counter.observe([msg(n, "alice", "same") for n in range(120)], windows)
    assert signals[-1] is not None and signals[-1].messages[2.0] == 50  # at the cap
    keys = list(local_redis.scan_iter(f"{prefix}:*"))
    assert keys
    for key in keys:
        assert local_redis.zcard(key) <= 50
        assert 0 < local_redis.pttl(key) <= 2000


def test_a_batch_is_one_round_trip(local_redis, prefix):
    counter = SignalCounter(local_redis, prefix=prefix)
    counter.observe([msg(0, "warm")])  # loads the script
    before = local_redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    counter.observe([msg(n, f"a{n % 7}", f"t{n % 3}") for n in range(500)])
    after = local_redis.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert after - before == 1


def test_without_redis_the_signals_are_absent_and_nothing_waits():
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    counter = SignalCounter(down)
    started = time.monotonic()
    assert counter.observe([msg(1, "alice"), msg(2, "bob")]) == [None, None]
    assert counter.observe([msg(3, "alice")]) == [None]
    assert not counter.record_violations([msg(4, "alice")])
    assert counter.round_trips == 1  # not asked again at once
    assert time.monotonic() - started < 1.0
