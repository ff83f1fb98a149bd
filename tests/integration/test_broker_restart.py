"""A RabbitMQ restart mid-run: every confirmed request gets a verdict.

Real ``celery -A worker worker`` processes, the real RabbitMQ and the simulated LLM.
Every scenario prints one summary line (``RELIABILITY scenario=...``)."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from kombu import Connection

from worker import topology
from worker.settings import Settings
from worker.testing.amqp import Producer, rabbitmqctl
from worker.testing.fake_llm import FakeLLM

from ._faults import (
    Collector,
    assert_none_lost,
    mixed_texts,
    requests_for,
    summary,
)

pytestmark = pytest.mark.slow


def _ctl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    return rabbitmqctl(*args, check=False, timeout=timeout)


def wait_broker_accepts(broker_url: str, settings: Settings, timeout: float = 90) -> float:
    """Until a connection opens and the requests quorum queue can be declared."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            with Connection(broker_url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
                topology.requests_queue(settings)(conn.default_channel).declare()
                return time.monotonic() - started
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def restart_broker(broker_url: str, settings: Settings, down_s: float) -> dict[str, float]:
    """``rabbitmqctl stop_app``, ``down_s`` seconds, ``start_app``: the start is in a
    ``finally`` (other agents share this broker), then wait until it accepts connections."""
    info: dict[str, float] = {}
    started = time.monotonic()
    try:
        result = _ctl("stop_app")
        info["stop_s"] = round(time.monotonic() - started, 1)
        assert result.returncode == 0, result.stderr.decode()[-500:]
        time.sleep(down_s)
    finally:
        for _attempt in range(5):
            if _ctl("start_app").returncode == 0:
                break
            time.sleep(1)
        _ctl("await_startup", timeout=120)
        wait_broker_accepts(broker_url, settings)
        info["outage_s"] = round(time.monotonic() - started, 1)
    return info


def test_broker_restart_mid_run_every_confirmed_request_gets_a_verdict(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    total = 2000
    settings = Settings(broker_url=broker_url)
    llm.state.control({"timing": "real", "ttft_ms": 50, "token_ms": 1})
    worker = start_worker()
    items = requests_for("rr", mixed_texts(total, seed=3))
    ids = {i.key for i in items}
    producer = Producer(broker_url)
    thread = threading.Thread(target=lambda: producer.publish(items, rate=400, deadline_s=180))
    thread.start()
    deadline = time.monotonic() + 60
    while (len(producer.confirmed) < total * 0.3 or len(collector.resolved(ids)) < 100) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)  # mid-run for both: the producer is publishing, the worker working
    before = len(collector.resolved(ids))
    confirmed_before = len(producer.confirmed)
    outage = restart_broker(broker_url, settings, down_s=2.0)
    restored_at = time.monotonic()
    thread.join(180)
    confirmed = set(producer.confirmed)
    collector.wait_for(confirmed, timeout=120)
    collector.settle(quiet_s=1.0)
    unconfirmed_with_verdict = len(collector.resolved(ids - confirmed))
    _, _, lost = summary(
        "broker_restart",
        confirmed,
        collector,
        broker_url=broker_url,
        published=total,
        confirmed=len(confirmed),
        republished=producer.republished,
        confirmed_before_restart=confirmed_before,
        done_before_restart=before,
        stop_app_s=outage.get("stop_s"),
        outage_s=outage.get("outage_s"),
        unconfirmed_but_verdict=unconfirmed_with_verdict,
        collector_reconnects=collector.reconnects,
    )
    assert_none_lost(lost)
    assert not collector.bad
    assert len(confirmed) == total, "the producer gave up before everything was confirmed"
    assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
    # The worker must also look alive again: its heartbeat keeps the health file fresh
    # (every 5 s) for the liveness probe. (It is also touched once when the consumer
    # restarts, so look well after that.)
    time.sleep(max(0.0, 16.0 - (time.monotonic() - restored_at)))
    age = time.time() - worker.health.stat().st_mtime
    assert age < 7.5, (
        f"health file not touched for {age:.0f} s after the broker came back: a liveness "
        "probe would restart this worker"
    )


# ---------------------------------------------------------------------------------------
# Scenario 4: SIGTERM with work in flight
# ---------------------------------------------------------------------------------------
