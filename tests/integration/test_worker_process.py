"""End to end through a real worker process: JSON in on RabbitMQ, verdicts out."""

from __future__ import annotations

import json
import queue

import pytest

from worker.client import ModerationClient
from worker.models import CATEGORIES

pytestmark = pytest.mark.slow

# A dozen kinds of unprocessable input, each with the reason it must be dead-lettered for.
BAD_INPUTS: list[tuple[bytes, dict[str, str], str]] = [
    (b"not json at all", {}, "invalid_json"),
    (b"\xff\xfe\x00garbage", {}, "invalid_utf8"),
    (b'["a", "list"]', {}, "not_object"),
    (b'"just a string"', {}, "not_object"),
    (b"null", {}, "not_object"),
    (b'{"text": "no id"}', {}, "invalid_fields"),
    (b'{"id": "x1"}', {}, "invalid_fields"),
    (b'{"id": 17, "text": "id must be a string"}', {}, "invalid_fields"),
    (b'{"id": "x2", "text": null}', {}, "invalid_fields"),
    (b'{"id": "x3", "text": "hi", "metadata": "not an object"}', {}, "invalid_fields"),
    (b'{"id": "x4", "text": "hi", "surprise": 1}', {}, "invalid_fields"),
    (b'{"id": "x5", "text": "hi", "score": NaN}', {}, "invalid_json"),
    (b'{"id": "x6", "text": "a", "id": "x7"}', {}, "invalid_json"),
    (json.dumps({"id": "x8", "text": "y" * 40_000}).encode(), {}, "text_too_long"),
    (b'{"id": "x9", "text": "\\ud800 lone surrogate"}', {}, "invalid_unicode"),
    (b'{"id": "x10", "text": "zipped"}', {"content_encoding": "gzip"}, "unsupported_encoding"),
    (
        json.dumps(
            {
                "id": "x11",
                "text": "hi",
                "metadata": {
                    "a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                },
            }
        ).encode(),
        {},
        "too_deep",
    ),
    (
        json.dumps({"id": "x12", "text": "hi", "metadata": {"blob": "z" * 20_000}}).encode(),
        {},
        "metadata_too_large",
    ),
]


def test_rules_llm_and_metadata_round_trip(start_worker, client: ModerationClient, fake_llm):
    start_worker()
    with client.subscribe("#") as verdicts:
        client.publish({"id": "r1", "text": "I will k1ll you tomorrow", "tenant": "t1"})
        client.publish({"id": "l1", "text": "you are so stupid", "metadata": {"n": [1, 2]}})
        client.publish({"id": "l2", "text": "lovely weather for a walk"})
        got = {v.id: v for v in verdicts.drain(3, timeout=30)}
    assert got["r1"].source == "rules" and got["r1"].action == "block"
    assert got["r1"].rule_matches[0].rule_id == "threat.kill-you"
    span = got["r1"].rule_matches[0].spans[0]
    assert "I will k1ll you tomorrow"[span.start : span.end] == "I will k1ll you"
    assert got["r1"].tenant == "t1"
    assert got["l1"].source == "llm" and got["l1"].action != "allow"
    assert got["l1"].category_scores["harassment"] == pytest.approx(0.88)
    assert got["l1"].metadata == {"n": [1, 2]}
    assert got["l1"].usage.prompt_tokens > 0 and got["l1"].cost_usd > 0
    assert got["l2"].action == "allow" and got["l2"].flagged is False
    assert set(got["l2"].category_scores) == set(CATEGORIES)
    assert fake_llm.state.requests >= 1


def test_routing_keys_let_consumers_bind_by_action_and_category(start_worker, client):
    start_worker()
    with client.subscribe("block.#") as blocks, client.subscribe("#.harassment") as harass:
        client.publish({"id": "b1", "text": "go drink bleach, loser"})
        client.publish({"id": "h1", "text": "what a pathetic moron you are"})
        client.publish({"id": "ok", "text": "see you at lunch"})
        assert blocks.get(timeout=30).id == "b1"  # block.harassment (a rule)
        assert {v.id for v in harass.drain(2)} == {"b1", "h1"}  # h1: review.harassment
        with pytest.raises(queue.Empty):
            blocks.get(timeout=2)  # neither "h1" nor "ok" is a block
        with pytest.raises(queue.Empty):
            harass.get(timeout=1)  # "ok" is allow.none


def test_bad_input_is_dead_lettered_and_good_input_around_it_still_gets_verdicts(
    start_worker, client: ModerationClient
):
    start_worker()
    with client.subscribe("#") as verdicts:
        client.publish({"id": "before", "text": "hello"})
        for body, props, _ in BAD_INPUTS:
            client.publish_raw(body, **props)
        client.publish({"id": "after", "text": "goodbye"})
        ids = {v.id for v in verdicts.drain(2, timeout=30)}
    assert ids == {"before", "after"}
    dead = list(client.dead_letters(timeout=3))
    assert sorted(d.reason for d in dead) == sorted(reason for _, _, reason in BAD_INPUTS)
    by_body = {d.body: d for d in dead}
    for body, _, reason in BAD_INPUTS:
        assert by_body[body].reason == reason  # original bytes kept for replay
        assert by_body[body].error


def test_without_llm_undecided_messages_get_the_fallback(start_worker, client):
    start_worker(OPENAI_BASE_URL="", OPENAI_API_KEY="")
    with client.subscribe("#") as verdicts:
        client.publish({"id": "u1", "text": "this needs a model to judge"})
        client.publish({"id": "k1", "text": "k y s"})
        got = {v.id: v for v in verdicts.drain(2, timeout=30)}
    assert got["u1"].source == "fallback" and got["u1"].action == "review"
    assert got["k1"].source == "rules" and got["k1"].action == "block"


def test_metrics_and_health(start_worker, client, tmp_path):
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = start_worker(MODERATION_METRICS_PORT=str(port))
    # ready (its health file written) means serving: /metrics answers at once, no retry
    assert b"moderation_" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
    with client.subscribe("#") as verdicts:
        client.publish({"id": "m1", "text": "kys"})
        client.publish({"id": "m2", "text": "a perfectly fine message"})
        client.publish_raw(b"{broken")
        verdicts.drain(2, timeout=30)
    import time

    deadline = time.monotonic() + 10  # the call's own counters may follow its verdicts
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
        if 'moderation_llm_requests_total{outcome="ok"}' in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 'moderation_verdicts_total{action="block",source="rules"} 1.0' in text
    assert 'moderation_dead_letters_total{reason="invalid_json"} 1.0' in text
    assert 'moderation_llm_requests_total{outcome="ok"} 1.0' in text
    assert 'moderation_stage_seconds_count{stage="end_to_end"}' in text
    health = subprocess.run(
        [sys.executable, "-m", "worker", "health"],
        capture_output=True,
        env={**worker.env, "MODERATION_HEALTH_FILE": str(worker.health)},
    )
    assert health.returncode == 0
    worker.stop()
    missing = subprocess.run(
        [sys.executable, "-m", "worker", "health"],
        capture_output=True,
        env={**worker.env, "MODERATION_HEALTH_FILE": str(tmp_path / "no")},
    )
    assert missing.returncode == 1


def test_a_stalled_llm_never_holds_back_what_the_rules_decide(start_worker, client, fake_llm):
    """Far more LLM work than the worker may hold: the rest waits in the deferred queue,
    so the rules' verdicts behind it go out at once and the LLM's fall back later."""
    fake_llm.state.stall_s = 60
    fake_llm.state.fault_rates["stall"] = 1.0  # every call hangs: no first token, ever
    start_worker(
        MODERATION_PREFETCH="60",
        MODERATION_LLM_MAX_PENDING="20",
        MODERATION_DEFERRED_PREFETCH="10",
        MODERATION_LLM_DEADLINE_S="4",
        MODERATION_LLM_EXPECTED_TTFT_MS="100",
    )
    llm_ids = [f"slow{n}" for n in range(150)]
    rules_ids = [f"fast{n}" for n in range(10)]
    with client.subscribe("#") as verdicts:
        for vid in llm_ids:
            client.publish({"id": vid, "text": f"an ordinary message number {vid}"})
        for vid in rules_ids:  # queued behind 150 messages the LLM will never answer
            client.publish({"id": vid, "text": "go hang yourself"})
        order = [v for v in verdicts.drain(len(llm_ids) + len(rules_ids), timeout=120)]
    got = {v.id: v for v in order}
    assert set(got) == set(llm_ids) | set(rules_ids)  # nothing lost
    assert all(got[i].source == "rules" and got[i].action == "block" for i in rules_ids)
    assert all(got[i].source == "fallback" and got[i].action == "review" for i in llm_ids)
    first_fallback = next(n for n, v in enumerate(order) if v.source == "fallback")
    last_rules = max(n for n, v in enumerate(order) if v.source == "rules")
    assert last_rules < first_fallback  # before the first LLM call could even time out
