"""Load-generator processes for the benchmark: a paced producer and a verdict collector.

Both are the AMQP toolkit's (``worker/testing/amqp.py``, which the reliability tests use
too): py-amqp directly (kombu's ``confirm_publish`` waits for every confirm, ~1.6k/s),
the producer keeping a window of unconfirmed publishes per connection, settled from the
broker's (``multiple``) acks. Here each runs in its own process so that neither
competes with the other for the GIL; timestamps are ``time.monotonic()``
(CLOCK_MONOTONIC is system-wide on Linux, so send and receive times from different
processes compare). What stays here is what only the benchmark wants of them: the send
time stamped into each body, and the per-message record its statistics are made of.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import amqp

from worker.settings import Settings
from worker.testing.amqp import BrokerAddress, Outgoing, Producer, VerdictCollector, parse_json

# -- producer ---------------------------------------------------------------------------


def _stamp(body: bytes) -> bytes:
    """The send time into metadata, just before publishing (bodies carry ``"t":0.0``)."""
    return body.replace(b'"t":0.0', b'"t":%r' % time.monotonic(), 1)


def produce(
    broker_url: str,
    bodies: list[bytes],
    rate: float,
    connections: int,
    window: int,
    timeout_s: float,
    result: Any,
    exchange: str = "",
    routing_key: str = "moderation.requests",
    in_flight: int = 0,
    answered: Any = None,
) -> None:
    """Publish ``bodies`` (``"t":0.0`` replaced by the send time) at ``rate``/s (0: flood).

    Each message once, on its schedule (``t0 + index / rate``, late ones not pushing
    back the rest), at most ``window`` unconfirmed per connection. ``in_flight`` > 0
    (with ``answered``, the collector's shared count of verdicts): a closed loop,
    publishing only while fewer than that many are unanswered, so that producer,
    broker, workers and collector all run for the whole phase.
    """
    producer = Producer(
        broker_url,
        routing_key,
        exchange=exchange,
        retry=False,
        mandatory=False,
        connect_attempts=10,
        connect_timeout=10.0,
    )
    producer.publish(
        [Outgoing(str(index), body) for index, body in enumerate(bodies)],
        rate=rate,
        window=window,
        deadline_s=timeout_s,
        connections=connections,
        catch_up_s=None,
        max_unanswered=in_flight,
        answered=(lambda: answered.value) if answered is not None else None,
        stamp=_stamp,
        start_delay_s=0.05,
    )
    result.put(producer.stats)


# -- verdict collector ------------------------------------------------------------------


def _record(verdict: dict[str, Any], received: float) -> tuple[Any, ...]:
    usage = verdict.get("usage") or {}
    return (
        (verdict.get("metadata") or {}).get("t"),
        received,
        verdict.get("source"),
        usage.get("prompt_tokens", 0),
        usage.get("completion_tokens", 0),
        usage.get("llm_calls", 0.0),
        verdict.get("cost_usd", 0.0),
        verdict.get("latency_ms"),
    )


def collect(
    broker_url: str,
    exchange: str,
    binding: str,
    prefix: str,
    expected: int,
    timeout_s: float,
    idle_s: float,
    ready: Any,
    result: Any,
    answered: Any = None,
) -> None:
    """Bind a queue to the verdicts, then record every verdict whose id starts with prefix
    (ids ``<prefix>0`` .. ``<prefix><expected - 1>``), until all came, ``timeout_s``,
    ``idle_s`` without a new one, or the connection is lost.

    ``answered``: a shared counter of recorded verdicts, for a closed-loop producer.

    Record per id (its first verdict): (sent, received, source, prompt_tokens,
    completion_tokens, llm_calls, cost_usd, worker latency_ms).
    """
    gc.collect()
    gc.freeze()  # the measuring instrument: no full-collection pauses in its timestamps

    def count(n: int) -> None:
        answered.value = n

    collector = VerdictCollector(
        broker_url,
        Settings(broker_url=broker_url, verdicts_exchange=exchange),
        parse=parse_json,
        binding=binding,
        durable=False,
        dead_letters=False,
        prefix=prefix,
        prefetch=5000,
        connect_attempts=10,
        on_new_id=count if answered is not None else None,
    ).start(timeout=90)
    ready.set()
    ids = {f"{prefix}{i}" for i in range(expected)}
    collector.wait_for(ids, timeout_s, idle_s=idle_s, poll_s=0.01)  # the phase's end, promptly
    with collector.lock:
        records = {
            vid: _record(copies[0], collector.first_at[vid])
            for vid, copies in collector.by_id.items()
        }
        duplicates = sum(len(copies) - 1 for copies in collector.by_id.values())
    stats: dict[str, Any] = {
        "duplicates": duplicates,
        "foreign": collector.foreign,
        "unparsable": len(collector.bad),
    }
    if collector.stopped:
        stats["stopped"] = collector.stopped
    if collector.stopped == "connection lost":
        stats["error"] = (
            f"{collector.error} (was RabbitMQ restarted by someone else, e.g. a reliability test?)"
        )
    result.put((records, stats))
    collector.stop()  # after: its last drain would only delay the phase's end


def queue_depths(broker_url: str, names: list[str]) -> dict[str, int | None]:
    address = BrokerAddress.parse(broker_url)
    connection = address.connect()
    out: dict[str, int | None] = {}
    try:
        for name in names:
            channel = connection.channel()
            try:
                _, count, _ = channel.queue_declare(name, passive=True)
                out[name] = count
                channel.close()
            except amqp.exceptions.NotFound:
                out[name] = None
    finally:
        connection.close()
    return out
