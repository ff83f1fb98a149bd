"""The adaptive call limit: grows on good calls, is cut on overload, once per burst."""

from __future__ import annotations

import threading

from worker._limiter import AdaptiveLimit, Signal


def test_slow_start_then_additive_growth_up_to_the_maximum():
    limit = AdaptiveLimit(maximum=20, initial=2)
    for _ in range(6):
        assert limit.acquire(timeout=0)
        limit.release(Signal.OK)
    assert limit.limit == 8  # +1 per good call before the first cut
    limit.release(Signal.OVERLOAD, call_s=0)
    cut = limit.limit
    assert cut < 8
    for _ in range(int(cut)):
        limit.release(Signal.OK)
    assert cut < limit.limit < cut + 1.5  # now about +1 per limit's worth of calls
    for _ in range(2000):
        limit.release(Signal.OK)
    assert limit.limit == 20


def test_one_burst_of_failures_is_one_cut_and_never_below_the_minimum():
    limit = AdaptiveLimit(maximum=30, initial=30, minimum=2)
    for _ in range(10):
        limit.release(Signal.OVERLOAD, call_s=60)
    assert limit.limit == 20
    for _ in range(40):
        limit.release(Signal.OVERLOAD, call_s=0)
    assert limit.limit == 2 and limit.at_minimum


def test_neutral_outcomes_change_nothing():
    limit = AdaptiveLimit(maximum=10, initial=4)
    limit.release(Signal.NEUTRAL)
    assert limit.limit == 4


def test_acquire_waits_for_a_free_slot_and_times_out():
    limit = AdaptiveLimit(maximum=1, initial=1)
    assert limit.acquire(timeout=0)
    assert limit.available == 0 and not limit.acquire(timeout=0.01)
    threading.Timer(0.05, limit.release, args=(Signal.OK,)).start()
    assert limit.acquire(timeout=5)


def test_the_target_is_the_maximum_until_overload_then_the_limit():
    limit = AdaptiveLimit(maximum=64, initial=4)
    assert limit.target == 64  # starting: headed for the maximum
    for _ in range(20):
        limit.release(Signal.OK)
    limit.release(Signal.OVERLOAD, call_s=0)
    assert limit.target == int(limit.limit) == 16
    for _ in range(17):  # a limit's worth of good calls (and a bit): one more
        limit.release(Signal.OK)
    assert limit.target == int(limit.limit) == 17
