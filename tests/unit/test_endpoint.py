"""The endpoint model: speed learned from calls, and batch size, cap and time-out from it."""

from __future__ import annotations

import math
import random

from worker._endpoint import CallTiming, EndpointModel
from worker._prompt import worst_reply_tokens


def test_streamed_calls_teach_first_token_and_token_times():
    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    for _ in range(60):
        model.observe(
            CallTiming(items=10, duration_s=0.3 + 49 * 0.05, completion_tokens=50, ttft_s=0.3)
        )
    assert abs(model.ttft_s - 0.3) < 0.01 and abs(model.token_s - 0.05) < 0.002
    assert abs(model.tokens_per_item - 5.0) < 0.1


def test_a_slower_endpoint_gets_smaller_batches():
    fast, slow = EndpointModel(), EndpointModel()
    for _ in range(60):
        fast.observe(
            CallTiming(items=20, duration_s=0.6 + 56 * 0.015, completion_tokens=56, ttft_s=0.6)
        )
        slow.observe(
            CallTiming(items=20, duration_s=0.6 + 56 * 0.06, completion_tokens=56, ttft_s=0.6)
        )
    assert fast.batch_size(1.5, 64) > 2 * slow.batch_size(1.5, 64) >= 2
    assert fast.expected_s(fast.batch_size(1.5, 64)) <= 1.5


def test_not_streamed_the_rest_is_first_token_time():
    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    for _ in range(60):
        model.observe(CallTiming(items=10, duration_s=2.0 + 30 * 0.015, completion_tokens=30))
    assert abs(model.ttft_s - 2.0) < 0.02
    assert model.batch_size(1.5, 64) >= 1  # the budget is gone, but batches still form


def test_the_cap_holds_the_longest_valid_reply_in_the_endpoints_tokenizer():
    model = EndpointModel(tokenizer_ratio=1.0)
    assert model.max_tokens(20) >= worst_reply_tokens(20)
    wordy = EndpointModel(tokenizer_ratio=1.0)
    for _ in range(60):
        wordy.observe(
            CallTiming(items=10, duration_s=1.0, completion_tokens=60, reply_tokens_o200k=30)
        )
    assert wordy.max_tokens(20) >= 2 * worst_reply_tokens(20)


def test_the_timeout_follows_the_cap_not_a_fixed_number():
    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    assert model.timeout_s(model.max_tokens(1), 30) == 30  # nothing observed yet
    for _ in range(3):
        model.observe(
            CallTiming(items=4, duration_s=0.6 + 12 * 0.015, completion_tokens=12, ttft_s=0.6)
        )
    small, large = (
        model.timeout_s(model.max_tokens(1), 30),
        model.timeout_s(model.max_tokens(40), 30),
    )
    assert small < large <= 30
    assert large >= 0.6 + model.max_tokens(40) * 0.015  # room for the longest valid reply


def test_queueing_shows_as_congestion():
    model = EndpointModel(ttft_s=0.5)
    for _ in range(20):
        model.observe(CallTiming(items=1, duration_s=0.55, completion_tokens=3, ttft_s=0.5))
    assert not model.congested
    for _ in range(30):
        model.observe(CallTiming(items=1, duration_s=3.05, completion_tokens=3, ttft_s=3.0))
    assert model.congested


def _lognormal_calls(
    model: EndpointModel, calls: int, items: int, added_s: float, seed: int = 7
) -> None:
    """Calls to a gpt-4o-mini-like endpoint (first token lognormal around 0.6 s, 15 ms a
    token, 3 tokens an item), each ``added_s`` later to its first token."""
    rng = random.Random(seed)
    for _ in range(calls):
        ttft = rng.lognormvariate(math.log(0.6), 0.25) + added_s
        tokens = 4 + 3 * items
        model.observe(
            CallTiming(
                items=items, duration_s=ttft + 0.015 * tokens, completion_tokens=tokens, ttft_s=ttft
            )
        )


def test_a_busy_client_is_not_a_queue_at_the_server():
    """A closed loop on two cores: every first token is read ~0.3 s late by the client's
    own threads. Cutting the call limit for it would only slow the worker down."""
    model = EndpointModel(ttft_s=0.6)
    _lognormal_calls(model, 100, items=10, added_s=0.0)
    assert not model.congested
    _lognormal_calls(model, 60, items=10, added_s=0.35, seed=8)
    assert not model.congested


def test_a_queue_at_a_server_with_slots_is_congestion():
    """More calls than slots: each waits for about one call ahead of it."""
    model = EndpointModel(ttft_s=0.6)
    _lognormal_calls(model, 100, items=10, added_s=0.0)
    call_s = model.expected_s(10)
    _lognormal_calls(model, 30, items=10, added_s=call_s, seed=9)
    assert model.congested


def test_a_time_out_makes_the_next_ones_longer():
    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    for _ in range(3):
        model.observe(CallTiming(items=4, duration_s=0.8, completion_tokens=12, ttft_s=0.6))
    before = model.timeout_s(100, 60)
    model.timed_out(before, 4)
    assert model.timeout_s(100, 60) >= min(60, 2 * before)


def test_prefill_that_grows_with_the_items_shrinks_the_batches():
    """A CPU server: the first token takes ~1 s more per item (its prefill)."""
    model = EndpointModel(ttft_s=0.6, token_s=0.025)
    for n in range(60):
        items = 1 + n % 4
        model.observe(
            CallTiming(
                items=items,
                duration_s=0.3 + 1.0 * items + 0.1,
                completion_tokens=3 * items,
                ttft_s=0.3 + 1.0 * items,
            )
        )
    assert model.batch_size(1.5, 64) == 1
    quick = EndpointModel(ttft_s=0.6, token_s=0.025)
    for n in range(60):
        items = 1 + n % 4
        quick.observe(
            CallTiming(items=items, duration_s=0.4, completion_tokens=3 * items, ttft_s=0.3)
        )
    assert quick.batch_size(1.5, 64) > 10


def test_a_fast_outlier_is_forgotten_and_prefill_heavy_calls_do_not_set_the_floor():
    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    for n in range(40):
        model.observe(
            CallTiming(
                items=6, duration_s=(0.45 if n % 2 else 0.75) + 0.015 * 18, completion_tokens=18
            )
        )
    floor = model.ttft_floor_s
    model.observe(CallTiming(items=6, duration_s=0.02 + 0.015 * 18, completion_tokens=18))
    assert model.ttft_floor_s < 0.05  # one call says: no queue at all
    for n in range(100):  # the same endpoint as before, for a window of calls
        model.observe(
            CallTiming(
                items=6, duration_s=(0.45 if n % 2 else 0.75) + 0.015 * 18, completion_tokens=18
            )
        )
    assert model.ttft_floor_s == floor and not model.congested  # forgotten, not kept for good

    model = EndpointModel(ttft_s=0.6, token_s=0.015)
    for n in range(40):  # 5 and 60 items: the line learns ~10 ms of prefill per item
        items = 5 if n % 2 else 60
        model.observe(
            CallTiming(
                items=items,
                duration_s=0.5 + 0.01 * items + 0.015 * 3 * items,
                completion_tokens=3 * items,
            )
        )
    floor = model.ttft_floor_s
    # a large call faster than the line says: most of its first token is the line's guess
    model.observe(CallTiming(items=60, duration_s=0.62 + 0.015 * 180, completion_tokens=180))
    assert model.ttft_floor_s == floor


def test_a_cpu_server_with_four_slots_and_many_calls_is_congested():
    """As seen against llama-server (Gemma-3-270M, 4 slots, 2 cores): first tokens ~4 s
    unqueued, ~14 s with 20 calls in flight, then time-outs. The time-outs raise the
    first-token estimate, which must not raise the bar for congestion with it."""
    model = EndpointModel(ttft_s=0.6)
    for _ in range(10):
        model.observe(CallTiming(items=1, duration_s=4.5, completion_tokens=12, ttft_s=3.9))
    assert not model.congested
    for _ in range(20):
        model.observe(CallTiming(items=1, duration_s=14.6, completion_tokens=12, ttft_s=14.0))
        model.timed_out(20.0, 1)
    assert model.congested


def test_a_backlog_batch_is_capped_at_what_the_time_out_allows():
    """As in CI against llama-server on a busy machine: four one-message calls took 15 s
    each; sending the 46 messages that waited meanwhile as two calls of 23 timed out at
    20 s. Whatever the sizes seen so far, the cautious forecast keeps such calls small,
    while an endpoint whose first token does not grow with the items keeps full ones."""
    cpu = EndpointModel()
    for _ in range(4):
        cpu.observe(CallTiming(items=1, duration_s=15.2, completion_tokens=15))
    assert cpu.most_items_within(10.0, 64) == 1
    cloud = EndpointModel()
    for n in range(12):
        items = (2, 6)[n % 2]
        cloud.observe(
            CallTiming(items=items, duration_s=0.6 + 3 * items * 0.015, completion_tokens=3 * items)
        )
    assert cloud.most_items_within(10.0, 64) == 64
    # where the first token is seen to grow with the items, the slope sets the cap
    prefill = EndpointModel()
    for n in range(12):
        items = (2, 6)[n % 2]
        prefill.observe(
            CallTiming(
                items=items,
                duration_s=0.5 + 0.8 * items + 3 * items * 0.02,
                completion_tokens=3 * items,
            )
        )
    assert 6 <= prefill.most_items_within(10.0, 64) <= 14
