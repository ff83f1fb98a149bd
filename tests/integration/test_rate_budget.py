"""The LLM account's budget, against the simulator's OpenAI-style limits.

The simulator allows 12,000 tokens a minute (prompt + completion asked for, counted as
OpenAI does, with x-ratelimit-* headers and 429s); the worker is told the same
(``MODERATION_LLM_TPM``). 400 messages at once are about twice what the budget allows in
a minute: the calls wait for budget instead of failing, the backlog waits in the broker
(the worker holds at most its prefetch windows, in ``moderation.requests`` and
``moderation.deferred``), and every message is decided by the model. Prints one
``RATE_BUDGET`` line.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request

import pytest

from worker.client import ModerationClient
from worker.testing.fake_llm import FakeLLM

pytestmark = pytest.mark.slow

TPM = 12_000
MESSAGES = 400


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_above_the_budget_calls_wait_for_it_instead_of_meeting_429s(
    start_worker, client: ModerationClient, llm: FakeLLM
):
    llm.state.control({"timing": "real", "ttft_ms": 50, "token_ms": 1, "tpm": TPM})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_worker(
        MODERATION_LLM_TPM=str(TPM),
        MODERATION_METRICS_PORT=str(port),
        MODERATION_PREFETCH="100",
        MODERATION_DEFERRED_PREFETCH="20",
    )
    inflight: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                inflight.append(_metric(response.read().decode(), "moderation_inflight_messages"))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    ids = {f"rb{n}" for n in range(MESSAGES)}
    started = time.monotonic()
    with client.subscribe("#") as verdicts:
        watcher.start()
        for n in range(MESSAGES):
            client.publish({"id": f"rb{n}", "text": f"an ordinary message, number {n} of many"})
        got = {v.id: v for v in verdicts.drain(MESSAGES, timeout=240)}
    took = time.monotonic() - started
    stop.set()
    watcher.join(5)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    stats = llm.state.stats()
    limited = stats["by_fault"].get("rate_limit", 0)
    sources = {}
    for verdict in got.values():
        sources[verdict.source.value] = sources.get(verdict.source.value, 0) + 1
    deferred = _metric(metrics, "moderation_deferred_total")
    print(
        f"\nRATE_BUDGET tpm={TPM} messages={MESSAGES} took_s={took:.0f} "
        f"llm_requests={stats['requests']} rate_limited={limited} sources={sources} "
        f"deferred={deferred:.0f} max_inflight={max(inflight, default=0):.0f} "
        f"tokens_counted_by_server={stats['prompt_tokens']}+{stats['completion_tokens']}",
        flush=True,
    )
    assert set(got) == ids  # nothing lost
    assert sources == {"llm": MESSAGES}, "a message fell back instead of waiting for budget"
    assert limited <= max(2, stats["requests"] // 20), f"{limited} 429s: a storm, not a budget"
    assert took > 30, "the budget was not the limit: the test asks too little of it"
    # the backlog waited in the broker: the worker held at most its prefetch windows
    assert max(inflight) <= 100 + 20 + 1, "the worker held more than its prefetch windows"


def test_below_the_budget_nothing_waits_and_nothing_is_refused(
    start_worker, client: ModerationClient, llm: FakeLLM
):
    """The same limits, 100 times the budget: the budget is there and costs nothing."""
    llm.state.control({"timing": "real", "ttft_ms": 50, "token_ms": 1, "tpm": TPM * 100})
    start_worker(MODERATION_LLM_TPM=str(TPM * 100))
    started = time.monotonic()
    with client.subscribe("#") as verdicts:
        for n in range(200):
            client.publish({"id": f"ok{n}", "text": f"an ordinary message, number {n} of a few"})
        got = {v.id: v for v in verdicts.drain(200, timeout=60)}
    took = time.monotonic() - started
    stats = llm.state.stats()
    print(f"\nRATE_BUDGET below: 200 messages in {took:.1f} s, {stats['requests']} calls")
    assert {v.source.value for v in got.values()} == {"llm"} and len(got) == 200
    assert stats["by_fault"].get("rate_limit", 0) == 0
    assert took < 30, "calls waited although the budget had room"
