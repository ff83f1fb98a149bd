"""LLM faults: every request still gets a sound verdict; the breaker fails fast and closed.

Real ``celery -A worker worker`` processes, the real RabbitMQ and the simulated LLM.
Every scenario prints one summary line (``RELIABILITY scenario=...``)."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from worker.testing.fake_llm import FakeLLM

from ._faults import (
    BENIGN,
    Collector,
    assert_none_lost,
    check_scored_verdict,
    mixed_texts,
    publish_and_collect,
    summary,
)

pytestmark = pytest.mark.slow


FAULT_RATES = {
    "429": 0.04,
    "500": 0.04,
    "timeout": 0.02,
    "malformed": 0.05,
    "truncated": 0.04,
    "refusal": 0.04,
    "missing": 0.05,
    "disconnect": 0.03,
}


def test_llm_faults_every_request_gets_a_sound_verdict(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    total = 1000
    state = llm.state
    state.control({"timing": "real", "ttft_ms": 30, "token_ms": 1})
    state.timeout_s = 2.0  # longer than the worker's 1 s client timeout
    llm.inject(*FAULT_RATES)  # each fault at least once, then at random
    with state.lock:
        state.fault_rates.update(FAULT_RATES)
    start_worker(MODERATION_LLM_TIMEOUT_S="1")
    texts = mixed_texts(total, seed=2)
    text_of, elapsed = publish_and_collect("f", texts, broker_url, collector, timeout=90)
    ids = set(text_of)
    sources = Counter(v.source.value for v in collector.verdicts)
    duplicates, _, lost = summary(
        "llm_faults",
        ids,
        collector,
        broker_url=broker_url,
        seconds=round(elapsed, 1),
        llm_requests=state.requests,
        faults=dict(sorted(state.by_fault.items())),
        sources=dict(sources),
    )
    assert_none_lost(lost)
    assert not collector.dead, [(d.reason, d.error) for d in collector.dead[:5]]
    assert set(state.by_fault) == set(FAULT_RATES), state.by_fault
    problems: list[str] = []
    for verdict in collector.verdicts:
        text = text_of[verdict.id]
        if verdict.source in ("llm", "cache"):
            problem = check_scored_verdict(verdict, text)
            if problem:
                problems.append(problem)
        elif verdict.source == "fallback":
            if not (verdict.reason or "").startswith("not classified: "):
                problems.append(f"{verdict.id}: fallback without a reason: {verdict.reason!r}")
            want = "block" if "underage" in text else "review"
            if verdict.action != want:
                problems.append(f"{verdict.id}: fallback {verdict.action}, expected {want}")
            if any(verdict.category_scores.values()):
                problems.append(f"{verdict.id}: fallback carries scores")
        else:
            problems.append(f"{verdict.id}: unexpected source {verdict.source}")
    assert not problems, problems[:20]
    assert sources["llm"] > total / 2, "most batches should get through the faults"
    assert duplicates == 0


def test_circuit_breaker_fails_fast_and_fallback_fails_closed(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    total = 400
    with llm.state.lock:
        llm.state.fault_rates["500"] = 1.0  # the endpoint is down
    # One message per LLM call, so "requests << messages" is down to the breaker alone;
    # a long reset so that no half-open trial call muddies the count.
    start_worker(MODERATION_BATCH_SIZE="1", MODERATION_BREAKER_RESET_S="120")
    texts = [
        f"this is the underage content you asked for (#{n})"
        if n % 10 == 0
        else f"{BENIGN[n % len(BENIGN)]} (#{n})"
        for n in range(total)
    ]
    text_of, elapsed = publish_and_collect("cb", texts, broker_url, collector, timeout=60)
    ids = set(text_of)
    latencies = sorted(v.latency_ms for v in collector.verdicts)
    circuit_open = sum("circuit open" in (v.reason or "") for v in collector.verdicts)
    _, _, lost = summary(
        "circuit_breaker",
        ids,
        collector,
        broker_url=broker_url,
        seconds=round(elapsed, 1),
        llm_requests=llm.state.requests,
        circuit_open=circuit_open,
        p50_latency_ms=round(statistics.median(latencies)) if latencies else None,
    )
    assert_none_lost(lost)
    wrong = [
        (v.id, v.source.value, v.action.value)
        for v in collector.verdicts
        if v.source != "fallback"
        or v.action != ("block" if "underage" in text_of[v.id] else "review")
    ]
    assert not wrong, f"not the policy fallback (minors -> block, rest -> review): {wrong[:10]}"
    # Without the breaker each message would cost llm_max_attempts (3) calls: 1,200.
    assert llm.state.requests < total / 10, llm.state.requests
    assert circuit_open > total * 0.9
    assert elapsed < 30, "fallback verdicts should not wait for a dead endpoint"


# ---------------------------------------------------------------------------------------
# Scenario 3: RabbitMQ restarted mid-run
# ---------------------------------------------------------------------------------------
