"""What one process holds for the LLM before the rest goes to the deferred queue."""

from __future__ import annotations

from worker._intake import pending_cap
from worker._limiter import AdaptiveLimit, Signal


def test_without_an_llm_the_setting_is_the_cap():
    assert pending_cap(3072, 64, None) == 3072


def test_a_starting_process_may_hold_what_its_maximum_of_calls_takes():
    limit = AdaptiveLimit(maximum=64, initial=4)
    assert pending_cap(3072, 64, limit) == 3072  # headed for 64 calls of 64: the setting
    assert pending_cap(100_000, 64, limit) == 65 * 64


def test_a_cut_limit_holds_only_its_calls_worth_and_one_batch_more():
    """The 2026-12-02 benchmark run: one process cut to 16 calls kept 3,072 messages for
    ~12 s while the other had room; capped, the rest waits where either can take it."""
    limit = AdaptiveLimit(maximum=64, initial=64)
    limit.release(Signal.OVERLOAD, call_s=0)  # 64 -> 42
    limit.release(Signal.OVERLOAD, call_s=0)  # -> 28
    limit.release(Signal.OVERLOAD, call_s=0)  # -> 18
    assert int(limit.limit) == 18
    assert pending_cap(3072, 64, limit) == 19 * 64
    for _ in range(200):
        limit.release(Signal.OK)
    assert pending_cap(3072, 64, limit) == (int(limit.limit) + 1) * 64  # grows back with it
