"""The classifier against the simulated LLM over real HTTP with the real openai client."""

from __future__ import annotations

import time

import pytest

from worker.classify import Classifier, ReplyError, parse_reply
from worker.models import CATEGORIES
from worker.settings import Settings
from worker.testing.fake_llm import score_text


@pytest.fixture
def classifier(fake_llm) -> Classifier:
    return Classifier(Settings(openai_base_url=fake_llm.base_url, openai_api_key="k",
                               llm_deadline_s=5.0, llm_timeout_s=1.0, breaker_fail_max=3,
                               breaker_reset_s=30.0))


def expected(text: str) -> tuple[float, ...]:
    scores = score_text(text)
    return tuple(scores[c] / 100 for c in CATEGORIES)


def test_batch_scores_come_back_in_order(classifier, fake_llm):
    items = [("you idiot", None), ("nice day", "parent: hi"), ("i will kill you", None)]
    result = classifier.classify(items)
    assert result.scores == [expected(t) for t, _ in items]
    assert result.usage.calls == 1 and result.usage.prompt_tokens > 0
    assert fake_llm.state.requests == 1


@pytest.mark.parametrize("fault", ["malformed", "truncated", "refusal"])
def test_a_bad_reply_is_asked_again_once_then_fails_never_guessed(classifier, fake_llm, fault):
    fake_llm.inject(fault)
    assert classifier.classify([("hello", None)]).scores == [expected("hello")]
    fake_llm.inject(fault, fault)
    result = classifier.classify([("hello", None)])
    assert result.scores == [None] and result.errors[0]


def test_an_item_missing_from_the_reply_is_sent_again_alone(classifier, fake_llm):
    fake_llm.inject("missing")
    result = classifier.classify([("a", None), ("b", None), ("stupid c", None)])
    assert result.scores == [expected("a"), expected("b"), expected("stupid c")]
    assert fake_llm.state.requests == 2 and fake_llm.state.items == 3 + 1


def test_rate_limits_honour_retry_after_and_5xx_back_off(classifier, fake_llm):
    fake_llm.inject("429", "500")
    started = time.monotonic()
    result = classifier.classify([("hello", None)])
    assert result.scores == [expected("hello")]
    assert time.monotonic() - started >= 0.2  # the fake's Retry-After
    assert fake_llm.state.requests == 3


def test_timeouts_are_retried_within_the_deadline(classifier, fake_llm):
    fake_llm.state.timeout_s = 3.0
    fake_llm.inject("timeout")
    assert classifier.classify([("hello", None)]).scores == [expected("hello")]


def test_the_breaker_opens_on_a_dead_endpoint_and_stops_calling(classifier, fake_llm):
    fake_llm.state.fault_rates["500"] = 1.0
    for _ in range(4):
        assert classifier.classify([("x", None)]).scores == [None]
    calls = fake_llm.state.requests
    result = classifier.classify([("x", None)])
    assert "circuit open" in (result.errors[0] or "")
    assert fake_llm.state.requests == calls


def test_parse_reply_rejects_what_is_not_an_answer():
    good = '{"r":[{"i":0,"s":[0,0,0,0,0,0,0,0,0,0,0,0,90]}]}'
    assert parse_reply(good, 1)[0][-1] == 0.9
    for bad in (None, "", "{", '{"r": 1}', '{"x": []}'):
        with pytest.raises(ReplyError):
            parse_reply(bad, 1)
    # out-of-range index, wrong length, out-of-range score, duplicates: item left out
    assert parse_reply('{"r":[{"i":5,"s":[0,0,0,0,0,0,0,0,0,0,0,0,0]}]}', 1) == {}
    assert parse_reply('{"r":[{"i":0,"s":[1,2]}]}', 1) == {}
    assert parse_reply('{"r":[{"i":0,"s":[0,0,0,0,0,0,0,0,0,0,0,0,101]}]}', 1) == {}
