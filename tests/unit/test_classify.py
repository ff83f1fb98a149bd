"""The classifier against the simulated LLM over real HTTP with the real openai client."""

from __future__ import annotations

import time

import pytest

from worker.classify import Classifier
from worker.settings import Settings
from worker.testing.fake_llm import answered_scores


def make_classifier(fake_llm, **overrides) -> Classifier:
    options = {
        "openai_base_url": fake_llm.base_url,
        "openai_api_key": "k",
        "llm_deadline_s": 5.0,
        "llm_timeout_s": 2.0,
        "breaker_fail_max": 3,
        "breaker_reset_s": 30.0,
        **overrides,
    }
    return Classifier(Settings(**options))


@pytest.fixture(params=[True, False], ids=["streamed", "whole"])
def classifier(request, fake_llm) -> Classifier:
    return make_classifier(fake_llm, llm_stream=request.param)


expected = answered_scores


ITEMS = [
    ("you idiot", None),
    ("nice day", "parent: hi"),
    ("i will kill you", None),
    ("lovely weather", None),
]


def test_a_batch_is_one_call_and_each_item_gets_its_own_scores(classifier, fake_llm):
    seen: list[int] = []
    result = classifier.classify(ITEMS, lambda answers: seen.extend(i for i, _, _ in answers))
    assert result.scores == [expected(t) for t, _ in ITEMS]
    assert sorted(seen) == [0, 1, 2, 3]  # every answer was handed on, once
    assert result.usage.calls == 1 and fake_llm.state.requests == 1
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    shares = result.items
    assert abs(sum(s.calls for s in shares) - 1) < 1e-9
    assert sum(s.completion_tokens for s in shares) > 0


def test_a_reply_without_usage_is_still_a_verdict_and_counts_no_tokens(classifier, fake_llm):
    """Some proxies (and servers in some modes) leave ``usage`` out: the scores stand,
    the call is counted, its tokens are not made up."""
    fake_llm.inject("no_usage")
    result = classifier.classify(ITEMS)
    assert result.scores == [expected(t) for t, _ in ITEMS]
    assert result.usage.calls == 1 and fake_llm.state.requests == 1
    assert result.usage.prompt_tokens == 0 and result.usage.completion_tokens == 0


def test_answers_out_of_order_land_on_the_right_items(classifier, fake_llm):
    fake_llm.inject("shuffled")
    result = classifier.classify(ITEMS)
    assert result.scores == [expected(t) for t, _ in ITEMS]
    assert fake_llm.state.requests == 1


def test_a_partial_answer_asks_only_the_missing_item_again(classifier, fake_llm):
    fake_llm.inject("missing")
    result = classifier.classify(ITEMS)
    assert result.scores == [expected(t) for t, _ in ITEMS]
    assert fake_llm.state.requests == 2 and fake_llm.state.items == 4 + 1


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_a_broken_reply_keeps_its_complete_entries_and_asks_the_rest(classifier, fake_llm, fault):
    fake_llm.inject(fault)
    result = classifier.classify(ITEMS)
    assert result.scores == [expected(t) for t, _ in ITEMS]
    assert fake_llm.state.requests == 2
    assert 4 < fake_llm.state.items < 8  # the second call asked only what was missing


def test_a_model_that_garbles_a_long_list_is_asked_shorter_ones(fake_llm):
    """Half of a 12-item reply malformed: the rest is asked again in halves. One such
    reply is a glitch; a second in a row caps calls at half the larger (6 items) until
    clean answers at the cap raise it again."""
    classifier = make_classifier(fake_llm, batch_size=16)
    items = [(f"an ordinary text {i}", None) for i in range(12)]
    fake_llm.inject("malformed")
    result = classifier.classify(items)
    assert result.scores == [expected(t) for t, _ in items]
    asked = list(fake_llm.state.asked)
    assert len(asked[0]) == 12 and len(asked) == 3  # the missing ones in two requests
    assert all(len(texts) <= 4 for texts in asked[1:])
    assert classifier.quality_cap == 16  # once is a glitch
    fake_llm.inject("malformed", "malformed")
    result = classifier.classify(items)
    assert result.scores == [expected(t) for t, _ in items]
    assert classifier.quality_cap == 6
    assert classifier.batch_size() <= 6 and classifier.backlog_batch_size() <= 6
    classifier.classify(items[:6])  # a clean answer at the cap raises it by one
    classifier.classify(items[:6])  # below the cap: says nothing
    assert classifier.quality_cap == 7
    classifier.classify(items[:7])
    assert classifier.quality_cap == 8


def test_a_reply_cut_at_the_cap_is_split_never_resent_unchanged(fake_llm):
    classifier = make_classifier(fake_llm, llm_max_output_tokens=9)  # too small for 4 items
    result = classifier.classify(ITEMS)
    assert result.scores == [expected(t) for t, _ in ITEMS]
    asked = list(fake_llm.state.asked)
    assert len(asked[0]) == 4 and all(len(texts) < 4 for texts in asked[1:])
    assert len(asked) == len(set(asked))  # no request was sent twice unchanged


def test_a_single_item_that_never_fits_the_cap_fails_after_one_call(fake_llm):
    classifier = make_classifier(fake_llm, llm_max_output_tokens=3)
    result = classifier.classify([("you idiot", None)])
    assert result.scores == [None] and "cut off" in (result.errors[0] or "")
    assert fake_llm.state.requests == 1


def test_refusals_and_garbage_are_asked_again_then_fail_never_guessed(classifier, fake_llm):
    fake_llm.inject("refusal")
    assert classifier.classify([("hello", None)]).scores == [expected("hello")]
    fake_llm.inject("refusal", "refusal", "refusal")
    result = classifier.classify([("hello", None)])
    assert result.scores == [None] and result.errors[0] == "model refused"


def test_a_context_size_400_splits_the_batch_and_is_remembered(fake_llm):
    fake_llm.state.context_tokens = 900
    fake_llm.state.error_style = "llamacpp"
    classifier = make_classifier(fake_llm)
    long = [(f"message {n} " + "words " * 120, None) for n in range(6)]
    result = classifier.classify(long)
    assert all(s is not None for s in result.scores)
    first = fake_llm.state.requests
    assert first > 1
    again = classifier.classify(long)  # the learned context splits it before asking
    assert all(s is not None for s in again.scores)
    assert fake_llm.state.requests - first < first


def test_a_text_too_long_for_the_context_fails_with_the_reason(fake_llm):
    fake_llm.state.context_tokens = 450
    classifier = make_classifier(fake_llm)
    result = classifier.classify([("words " * 400, None)])
    assert result.scores == [None]
    assert "context" in (result.errors[0] or "") and "400" in (result.errors[0] or "")


def test_rate_limits_honour_retry_after_and_5xx_back_off(classifier, fake_llm):
    fake_llm.inject("429", "500")
    started = time.monotonic()
    result = classifier.classify([("hello", None)])
    assert result.scores == [expected("hello")]
    assert time.monotonic() - started >= 0.2  # the fake's Retry-After
    assert fake_llm.state.requests == 3 and result.usage.calls == 3  # every HTTP call


def test_timeouts_are_retried_within_the_deadline(classifier, fake_llm):
    fake_llm.state.timeout_s = 3.0
    fake_llm.inject("timeout")
    assert classifier.classify([("hello", None)]).scores == [expected("hello")]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_stalled_endpoint_is_given_up_within_the_deadline(fake_llm, stream):
    fake_llm.state.stall_s = 30
    classifier = make_classifier(
        fake_llm, llm_expected_ttft_ms=100, llm_deadline_s=2.0, llm_stream=stream
    )
    fake_llm.inject("stall", "stall", "stall", "stall")
    started = time.monotonic()
    result = classifier.classify([("hello", None)])
    assert result.scores == [None] and time.monotonic() - started < 10


def test_the_breaker_opens_on_a_dead_endpoint_and_stops_calling(classifier, fake_llm):
    fake_llm.state.fault_rates["500"] = 1.0
    for _ in range(4):
        assert classifier.classify([("x", None)]).scores == [None]
    calls = fake_llm.state.requests
    result = classifier.classify([("x", None)])
    assert "circuit open" in (result.errors[0] or "")
    assert fake_llm.state.requests == calls


def test_a_slow_endpoint_gets_smaller_batches(fake_llm):
    classifier = make_classifier(fake_llm, llm_latency_budget_ms=1000, batch_size=64)
    fake_llm.state.timing = "real"
    fake_llm.state.ttft_ms, fake_llm.state.ttft_sigma, fake_llm.state.token_ms = 50, 0.0, 2
    for _ in range(12):
        classifier.classify([(f"text {n}", None) for n in range(16)])
    fast = classifier.batch_size()
    fake_llm.state.token_ms = 40
    for _ in range(12):
        classifier.classify([(f"text {n}", None) for n in range(8)])
    slow = classifier.batch_size()
    assert fast > 2 * slow and slow <= 12, (fast, slow)


def test_a_server_whose_prefill_dominates_gets_batches_its_prefill_allows(fake_llm):
    """A CPU server: the first token waits for the prompt (2 s per 1,000 tokens), so
    each item's ~70 prompt tokens cost more than its output. The first answer replaces
    the gpt-4o-mini guesses and the first calls, of sizes that differ, show the slope;
    no call is then sized as if only output tokens grew with the items (that sizing
    sent 14 items, 2.5 s, against this budget of 1.5 s)."""
    fake_llm.state.control(
        {
            "timing": "real",
            "ttft_ms": 50,
            "ttft_sigma": 0.0,
            "token_ms": 5,
            "prefill_ms_per_1k": 2000,
        }
    )
    classifier = make_classifier(
        fake_llm,
        llm_latency_budget_ms=1500,
        batch_size=64,
        llm_timeout_s=20.0,
        llm_deadline_s=20.0,
    )
    text = "a sentence of some length that a user wrote about the weather " * 4
    calls = []
    for call in range(8):
        size = classifier.batch_size()
        started = time.monotonic()
        result = classifier.classify([(f"{call} {n} {text}", None) for n in range(size)])
        calls.append((size, round(time.monotonic() - started, 2)))
        assert all(s is not None for s in result.scores)
    assert classifier.endpoint.known
    assert max(took for _, took in calls) < 2.0, calls
    assert calls[-1][0] >= 2, calls  # and not shrunk to nothing either


def test_a_saturated_endpoint_gets_fewer_calls_not_a_breaker_trip(fake_llm):
    """One slot at the server, a dozen callers: requests queue there, the first token
    comes late, the call limit comes down, and every item is still answered."""
    import threading

    fake_llm.state.control(
        {"timing": "real", "ttft_ms": 100, "ttft_sigma": 0.0, "token_ms": 2, "slots": 1}
    )
    classifier = make_classifier(fake_llm, llm_timeout_s=20.0, llm_deadline_s=30.0, concurrency=12)
    classifier.limit.limit = 12.0  # as if it had grown against a faster endpoint
    results = []

    def caller(n: int) -> None:
        for k in range(6):
            results.append(classifier.classify([(f"text {n} {k} {i}", None) for i in range(2)]))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is not None for r in results for s in r.scores)
    assert classifier.breaker.current_state == "closed"
    e = classifier.endpoint
    assert classifier.limit.limit < 6, (classifier.limit.limit, e.ttft_s, e.ttft_floor_s)
