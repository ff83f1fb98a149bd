"""Issue 4, "Nothing lost": crashes, LLM faults, broker restarts and hostile input.

Real ``celery -A worker worker`` processes, the real RabbitMQ and the simulated LLM.
Every scenario prints one summary line (``RELIABILITY scenario=...``) and fails if any
request ends with neither a verdict nor a dead letter.

Accounting: each request carries a unique id. A *verdict* or a *dead letter* resolves
it; anything left unresolved after the wait is *lost*. A request resolved more than once
is a *duplicate* (at-least-once delivery allows them; they are counted, not failed,
except that a repeat must say ``redelivered: true``).
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from worker import topology
from worker.client import ModerationClient
from worker.models import CATEGORIES, Verdict
from worker.policy import Policy, decide
from worker.settings import DEFAULT_POLICY, Settings
from worker.testing.amqp import DeadRecord, Outgoing, Producer, VerdictCollector, rabbitmqctl
from worker.testing.fake_llm import FakeLLM, answered_scores

pytestmark = pytest.mark.slow

HOSTILE = Path(__file__).parent / "data" / "hostile" / "cases.jsonl"
THRESHOLDS = Policy.load(DEFAULT_POLICY).for_tenant(None).thresholds


# ---------------------------------------------------------------------------------------
# Collecting verdicts and dead letters (own connection, own thread, survives restarts),
# publishing with confirms, republishing what the broker did not confirm: the toolkit's
# ---------------------------------------------------------------------------------------

# Every verdict (its own quorum queue bound ``#``) and ``moderation.dead``; reconnects after
# a broker outage, and the verdict queue is durable, so nothing published meanwhile is missed.
Collector = VerdictCollector[Verdict]


@pytest.fixture
def collector(broker_url: str, client: ModerationClient) -> Iterator[Collector]:
    """Bound before anything is published (``client`` purged the queues first)."""
    c: Collector = VerdictCollector(
        broker_url,
        Settings(broker_url=broker_url),
        queue_name=f"test.reliability.verdicts.{uuid.uuid4().hex[:8]}",
    ).start()
    yield c
    c.stop()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> Iterator[FakeLLM]:
    """The simulated LLM, able to take a worker's 48 concurrent calls.

    ``ThreadingHTTPServer`` listens with a backlog of 5: with dozens of connections
    opening at once the kernel drops the handshakes it has no room for and the client
    waits out its whole timeout, which would test the fake, not the worker. A killed
    worker also leaves broken connections behind, whose tracebacks are only noise here.
    """
    server = fake_llm._server
    server.socket.listen(512)
    original = server.handle_error

    def quiet(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # broken pipes, resets
            original(request, client_address)

    server.handle_error = quiet  # type: ignore[method-assign]
    yield fake_llm
    server.handle_error = original  # type: ignore[method-assign]
    server.socket.listen(server.request_queue_size)


def requests_for(prefix: str, texts: list[str]) -> list[Outgoing]:
    return [
        Outgoing(f"{prefix}-{n}", json.dumps({"id": f"{prefix}-{n}", "text": t}).encode())
        for n, t in enumerate(texts)
    ]


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def queue_counts(broker_url: str, queue: str = "moderation.requests") -> str:
    """``ready+unacked`` of a queue: tells "still waiting in the broker" from "gone"."""
    vhost = broker_url.rsplit("/", 1)[1] or "/"
    result = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", check=False
    )
    for line in result.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if parts and parts[0] == queue and len(parts) == 3:
            return f"{parts[1]}+{parts[2]}"
    return "?"


def summary(name: str, ids: set[str], col: Collector, **extra: Any) -> tuple[int, int, set[str]]:
    """Print the scenario's summary line; return (duplicates, redelivered, lost ids).

    *lost* counts requests with neither a verdict nor a dead letter when the scenario's
    wait ran out; ``broker_url=...`` adds where they are (``still_queued=ready+unacked``
    of ``moderation.requests``): still in the broker means stuck or slow, not dropped.
    """
    broker_url = extra.pop("broker_url", None)
    dead = col.dead_by_id()
    with col.lock:
        by_id = {k: list(v) for k, v in col.by_id.items()}
        total_verdicts = len(col.verdicts)
        total_dead = len(col.dead)
    resolved = {i for i in ids if by_id.get(i) or dead.get(i)}
    lost = ids - resolved
    duplicates = sum(max(len(by_id.get(i, [])) + len(dead.get(i, [])) - 1, 0) for i in ids)
    redelivered = sum(1 for i in ids for v in by_id.get(i, []) if v.redelivered)
    line = (
        f"RELIABILITY scenario={name} requests={len(ids)} verdicts={total_verdicts} "
        f"dead_letters={total_dead} duplicates={duplicates} lost={len(lost)} "
        f"redelivered={redelivered}"
    )
    if lost and broker_url:
        extra["still_queued"] = queue_counts(broker_url)
    for key, value in extra.items():
        line += f" {key}={value}"
    print("\n" + line, flush=True)
    return duplicates, redelivered, lost


def assert_none_lost(lost: set[str]) -> None:
    assert not lost, (
        f"{len(lost)} requests lost (no verdict and no dead letter when the wait ran out): "
        f"{sorted(lost)[:20]}"
    )


def assert_repeats_flagged(ids: set[str], col: Collector) -> None:
    """At most one copy of a request's verdict may say ``redelivered: false``."""
    unflagged = {
        i: len(vs)
        for i in ids
        if len(vs := col.by_id.get(i, [])) > 1 and sum(not v.redelivered for v in vs) > 1
    }
    assert not unflagged, f"repeated verdicts without redelivered=true: {unflagged}"


# ---------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------

BENIGN = [
    "lovely weather for a walk by the river",
    "does anyone know when the next update ships",
    "thanks for the recipe, the soup was great",
    "the meeting moved to thursday afternoon",
    "my cat knocked the plant off the shelf again",
]
LEXICON_TEXTS = [
    "you are such an idiot, honestly",  # harassment 0.88 -> review
    "where can I buy drugs around here",  # illicit 0.88 -> review
    "that movie was full of gore",  # violence/graphic 0.88 -> review
    "some days I want to die",  # self-harm/intent 0.88 -> review
    "this is the underage content you asked for",  # sexual/minors suspect -> block
]


def mixed_texts(n: int, seed: int = 4) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = rng.choice(LEXICON_TEXTS) if i % 4 == 0 else rng.choice(BENIGN)
        out.append(f"{base} (#{i})")  # unique: no cache short-cuts
    return out


def expected_scores(text: str, gullible: bool = False) -> dict[str, float]:
    """What the fake LLM answers for ``text`` (its deterministic lexicon)."""
    return dict(zip(CATEGORIES, answered_scores(text, gullible), strict=True))


def check_scored_verdict(verdict: Verdict, text: str, gullible: bool = False) -> str | None:
    """An llm/cache verdict must carry exactly the fake's scores and the action they imply."""
    want = expected_scores(text, gullible)
    for c in CATEGORIES:
        if abs(verdict.category_scores[c] - want[c]) > 1e-9:
            return f"{verdict.id}: {c} scored {verdict.category_scores[c]}, fake said {want[c]}"
    action, _ = decide(want, THRESHOLDS)
    if verdict.action != action:
        return f"{verdict.id}: action {verdict.action} but scores imply {action}"
    return None


# ---------------------------------------------------------------------------------------
# Scenario 1: kill -9 twice in the middle of a run
# ---------------------------------------------------------------------------------------


def publish_and_collect(
    prefix: str, texts: list[str], broker_url: str, collector: Collector, timeout: float
) -> tuple[dict[str, str], float]:
    """Publish one request per text, wait for all outcomes; (text by id, seconds taken)."""
    items = requests_for(prefix, texts)
    text_of = {i.key: t for i, t in zip(items, texts, strict=True)}
    started = time.monotonic()
    Producer(broker_url).publish(items)
    collector.wait_for(set(text_of), timeout=timeout)
    elapsed = time.monotonic() - started
    collector.settle(quiet_s=0.5)
    return text_of, elapsed


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


def _gen_text_chars(id: str, chars: int) -> list[bytes]:
    return [json.dumps({"id": id, "text": "a" * chars}).encode()]


def _gen_deep_array(depth: int) -> list[bytes]:
    return [b"[" * depth + b"]" * depth]


def _gen_deep_metadata(id: str, depth: int) -> list[bytes]:
    head = json.dumps({"id": id, "text": "hi"})[:-1]
    return [(head + ', "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}").encode()]


def _gen_deep_unknown_field(id: str, depth: int) -> list[bytes]:
    head = json.dumps({"id": id, "text": "hi"})[:-1]
    return [(head + ', "extra": ' + "[" * depth + "]" * depth + "}").encode()]


def _gen_huge_metadata(id: str, bytes: int) -> list[bytes]:
    return [json.dumps({"id": id, "text": "hi", "metadata": {"blob": "z" * bytes}}).encode()]


def _gen_many_keys_metadata(id: str, keys: int) -> list[bytes]:
    metadata = {f"k{n}": n for n in range(keys)}
    return [json.dumps({"id": id, "text": "hi", "metadata": metadata}).encode()]


def _gen_huge_integer(digits: int) -> list[bytes]:
    return [b'{"id": "h-bigint", "text": "hi", "metadata": {"n": 1' + b"0" * (digits - 1) + b"}}"]


def _gen_gzip(id: str) -> list[bytes]:
    return [gzip.compress(json.dumps({"id": id, "text": "compressed"}).encode(), mtime=0)]


def _gen_many_tiny(count: int) -> list[bytes]:
    return [json.dumps({"id": f"h-tiny-{n}", "text": "k"}).encode() for n in range(count)]


GENERATORS: dict[str, Callable[..., list[bytes]]] = {
    "text_chars": _gen_text_chars,
    "deep_array": _gen_deep_array,
    "deep_metadata": _gen_deep_metadata,
    "deep_unknown_field": _gen_deep_unknown_field,
    "huge_metadata": _gen_huge_metadata,
    "many_keys_metadata": _gen_many_keys_metadata,
    "huge_integer": _gen_huge_integer,
    "gzip": _gen_gzip,
    "many_tiny": _gen_many_tiny,
}


@dataclass(slots=True)
class Case:
    name: str
    group: str
    bodies: list[bytes]
    properties: dict[str, Any]
    expect: str
    action: str | None
    action_not: list[str]
    source: str | None
    note: str

    @property
    def dead_reason(self) -> str | None:
        return self.expect.split(":", 1)[1] if self.expect.startswith("dead:") else None


def load_cases(group: str) -> list[Case]:
    cases = []
    for line in HOSTILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        if raw["group"] != group:
            continue
        if "body_b64" in raw:
            bodies = [base64.b64decode(raw["body_b64"])]
        else:
            bodies = GENERATORS[raw["generator"]](**raw.get("args", {}))
        cases.append(
            Case(
                name=raw["name"],
                group=raw["group"],
                bodies=bodies,
                properties=raw.get("properties", {}),
                expect=raw["expect"],
                action=raw.get("action"),
                action_not=raw.get("action_not", []),
                source=raw.get("source"),
                note=raw.get("note", ""),
            )
        )
    return cases


def test_hostile_corpus_manifest_is_well_formed():
    cases = load_cases("input") + load_cases("injection")
    from worker.validate import DeadReason

    reasons = {r.value for r in DeadReason}
    assert len({c.name for c in cases}) == len(cases)
    assert len(cases) >= 30
    for case in cases:
        assert case.expect == "verdict" or case.dead_reason in reasons, case.name
        assert case.bodies, case.name
    bodies = [b for c in cases if c.dead_reason for b in c.bodies]
    assert len(bodies) == len(set(bodies)), "dead-letter cases are told apart by body"


def _run_cases(
    cases: list[Case],
    collector: Collector,
    broker_url: str,
    worker: Any,
    gullible: bool,
    scenario: str,
) -> list[str]:
    """Publish every case between two normal messages; return the problems found."""
    pid = worker.proc.pid
    items = [Outgoing("before", b'{"id": "h-before", "text": "good morning"}')]
    for case in cases:
        for n, body in enumerate(case.bodies):
            items.append(Outgoing(f"{case.name}#{n}", body, dict(case.properties)))
    Producer(broker_url).publish(items)
    verdict_ids: dict[str, tuple[Case, str]] = {}  # request id -> (case, text)
    dead_bodies: dict[bytes, Case] = {}
    for case in cases:
        for body in case.bodies:
            if case.dead_reason:
                dead_bodies[body] = case
            else:
                request = json.loads(body)
                verdict_ids[request["id"]] = (case, request["text"])
    wanted = set(verdict_ids) | {"h-before"}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        got_dead = {d.body for d in collector.dead}
        if wanted <= set(collector.by_id) and set(dead_bodies) <= got_dead:
            break
        time.sleep(0.1)
    # The worker is still up and still answering: a normal message after all of it.
    Producer(broker_url).publish([Outgoing("after", b'{"id": "h-after", "text": "bye now"}')])
    after = collector.wait_for({"h-after"}, timeout=30)
    collector.settle(quiet_s=1.0)

    problems: list[str] = []
    if after:
        problems.append("no verdict for a normal message sent after the corpus")
    if worker.proc.poll() is not None or worker.proc.pid != pid:
        problems.append(f"the worker process exited (code {worker.proc.poll()})")
    log = worker.output()
    for marker in (
        "receive_failed",
        "batch_failed",
        "prepare_failed",
        "RecursionError",
        "publish_callback_failed",
    ):
        if marker in log:
            problems.append(f"worker log has {marker}")
    by_body: dict[bytes, list[DeadRecord]] = defaultdict(list)
    for record in collector.dead:
        by_body[record.body].append(record)
    for body, case in dead_bodies.items():
        records = by_body.pop(body, [])
        if not records:
            problems.append(f"{case.name}: no dead letter (expected {case.dead_reason})")
        elif {r.reason for r in records} != {case.dead_reason}:
            problems.append(
                f"{case.name}: dead-lettered as {[r.reason for r in records]}, "
                f"expected {case.dead_reason} ({records[0].error[:100]})"
            )
        elif not all(r.error for r in records):
            problems.append(f"{case.name}: dead letter without an error detail")
    for body, records in by_body.items():
        problems.append(f"unexpected dead letter {records[0].reason}: {body[:80]!r}")
    for rid, (case, text) in verdict_ids.items():
        verdicts = collector.by_id.get(rid, [])
        if not verdicts:
            problems.append(f"{case.name}: no verdict for {rid!r}")
            continue
        for verdict in verdicts:
            if case.action and verdict.action != case.action:
                problems.append(
                    f"{case.name}: action {verdict.action.value}, "
                    f"expected {case.action} ({verdict.source.value})"
                )
            if verdict.action.value in case.action_not:
                problems.append(
                    f"{case.name}: action {verdict.action.value} "
                    f"(source {verdict.source.value}, reason {verdict.reason!r})"
                )
            if (
                case.source
                and verdict.source.value != case.source
                and not (case.source == "llm" and verdict.source == "cache")
            ):
                problems.append(
                    f"{case.name}: source {verdict.source.value}, expected {case.source}"
                )
            if verdict.source in ("llm", "cache"):
                problem = check_scored_verdict(verdict, text, gullible)
                if problem:
                    problems.append(f"{case.name}: {problem}")
    lost = [rid for rid in wanted | {"h-after"} if not collector.by_id.get(rid)]
    lost += [
        case.name
        for body, case in dead_bodies.items()
        if body not in {d.body for d in collector.dead}
    ]
    duplicates = sum(max(len(collector.by_id.get(rid, [])) - 1, 0) for rid in wanted)
    print(
        f"\nRELIABILITY scenario={scenario} requests={len(items) + 1} "
        f"verdicts={len(collector.verdicts)} dead_letters={len(collector.dead)} "
        f"duplicates={duplicates} lost={len(lost)} cases={len(cases)} "
        f"expected_verdicts={len(wanted) + 1} expected_dead={len(dead_bodies)} "
        f"worker_restarted={worker.proc.poll() is not None} problems={len(problems)}",
        flush=True,
    )
    if lost:
        problems.insert(0, f"LOST: {sorted(lost)[:20]}")
    return problems


def test_hostile_input_corpus(start_worker, collector: Collector, llm: FakeLLM, broker_url: str):
    cases = load_cases("input")
    worker = start_worker()
    problems = _run_cases(cases, collector, broker_url, worker, False, "hostile")
    assert not problems, "\n".join(problems)


def test_prompt_injection_cannot_change_the_action(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    """With a model that obeys injected instructions (gullible: all-zero scores when the
    text says "allow"), a real threat next to an injection must still not be allowed."""
    llm.state.gullible = True
    cases = load_cases("injection")
    worker = start_worker()
    problems = _run_cases(cases, collector, broker_url, worker, True, "injection")
    assert not problems, "\n".join(problems)
