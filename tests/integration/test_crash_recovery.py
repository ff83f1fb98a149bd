"""Killed and stopped workers: kill -9 and SIGTERM with work in flight lose nothing.

Real ``celery -A worker worker`` processes, the real RabbitMQ and the simulated LLM.
Every scenario prints one summary line (``RELIABILITY scenario=...``)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from worker.settings import Settings
from worker.testing.amqp import Producer
from worker.testing.fake_llm import FakeLLM

from ._faults import (
    Collector,
    assert_none_lost,
    assert_repeats_flagged,
    mixed_texts,
    requests_for,
    summary,
)

pytestmark = pytest.mark.slow


def test_kill_9_twice_loses_nothing(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    total = 3000
    llm.state.control({"timing": "real", "ttft_ms": 75, "token_ms": 1.5})  # a fast model
    items = requests_for("k9", mixed_texts(total))
    ids = {i.key for i in items}
    worker = start_worker()
    started = time.monotonic()
    publisher = threading.Thread(target=lambda: Producer(broker_url).publish(items))
    publisher.start()
    kills: list[str] = []
    for fraction in (0.3, 0.6):
        target = int(total * fraction)
        deadline = time.monotonic() + 60
        while len(collector.resolved(ids)) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-3000:]
        done_at_kill = len(collector.resolved(ids))
        worker.kill(signal.SIGKILL)
        worker.proc.wait(10)
        kills.append(f"{done_at_kill}")
        worker = start_worker()
    publisher.join(60)
    collector.wait_for(ids, timeout=45)
    elapsed = time.monotonic() - started
    collector.settle()
    _, redelivered, lost = summary(
        "kill9",
        ids,
        collector,
        broker_url=broker_url,
        kills_at=",".join(kills),
        seconds=round(elapsed, 1),
        llm_requests=llm.state.requests,
        sources=dict(Counter(v.source.value for v in collector.verdicts)),
    )
    assert_none_lost(lost)
    assert not collector.dead, [(d.reason, d.error) for d in collector.dead[:5]]
    assert not collector.bad
    assert redelivered > 0, "the kills hit no message in flight: the test proved nothing"
    assert_repeats_flagged(ids, collector)


# ---------------------------------------------------------------------------------------
# Scenario 2: the LLM misbehaves in every way; the circuit breaker; fail-closed fallback
# ---------------------------------------------------------------------------------------


def _sigterm_run(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str, prefix: str
) -> tuple[set[str], Any, dict[str, Any]]:
    total = 300
    llm.state.control({"timing": "real", "ttft_ms": 500, "token_ms": 15})  # gpt-4o-mini
    worker = start_worker()
    items = requests_for(prefix, mixed_texts(total, seed=5))
    ids = {i.key for i in items}
    Producer(broker_url).publish(items)
    deadline = time.monotonic() + 30
    while llm.state.requests < 5 and time.monotonic() < deadline:
        time.sleep(0.01)  # batches are at the LLM: a few hundred messages in flight
    in_flight = total - len(collector.resolved(ids))
    sent = time.monotonic()
    worker.kill(signal.SIGTERM)
    assert worker.proc is not None
    code = worker.proc.wait(60)
    exit_s = time.monotonic() - sent
    collector.settle(quiet_s=0.5, timeout=5)
    by_first = len(collector.resolved(ids))
    info = {
        "in_flight_at_sigterm": in_flight,
        "exit_code": code,
        "exit_s": round(exit_s, 1),
        "finished_by_first_worker": by_first,
        "left_inflight_logged": "shutdown_left_inflight" in worker.output(),
    }
    start_worker()
    return ids, worker, info


def test_sigterm_with_work_in_flight_loses_nothing(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    ids, _, info = _sigterm_run(start_worker, collector, llm, broker_url, "st")
    collector.wait_for(ids, timeout=30)
    collector.settle()
    _, _, lost = summary("sigterm", ids, collector, broker_url=broker_url, **info)
    assert_none_lost(lost)
    assert info["in_flight_at_sigterm"] > 100, "SIGTERM came too late to test anything"
    assert info["exit_code"] == 0
    assert info["exit_s"] < Settings().shutdown_grace_s + 10
    assert not collector.dead
    assert_repeats_flagged(ids, collector)


def test_sigterm_finishes_in_flight_work_within_the_grace_period(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    """The documented behaviour (``MODERATION_SHUTDOWN_GRACE_S``: "On SIGTERM, time to
    finish in-flight work before exiting"): with 0.5 s LLM calls and a 25 s grace, the
    worker that got SIGTERM answers and acks what it holds; nothing needs redelivery."""
    ids, _, info = _sigterm_run(start_worker, collector, llm, broker_url, "sg")
    collector.wait_for(ids, timeout=30)
    collector.settle()
    _, redelivered, lost = summary("sigterm_grace", ids, collector, broker_url=broker_url, **info)
    assert not info["left_inflight_logged"], (
        "the worker logged shutdown_left_inflight: it returned in-flight messages instead "
        "of finishing them within the grace period"
    )
    assert info["finished_by_first_worker"] == len(ids), info
    assert redelivered == 0
    assert_none_lost(lost)


# ---------------------------------------------------------------------------------------
# Scenario 5: the hostile input corpus
# ---------------------------------------------------------------------------------------
