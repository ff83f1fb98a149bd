"""What the fault tests share: requests with unique ids, accounting of what came back,
and the checks a sound verdict must pass.

Accounting: each request carries a unique id. A *verdict* or a *dead letter* resolves
it; anything left unresolved after the wait is *lost*. A request resolved more than once
is a *duplicate* (at-least-once delivery allows them; they are counted, not failed,
except that a repeat must say ``redelivered: true``).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from worker.models import CATEGORIES, Verdict
from worker.policy import Policy, decide
from worker.settings import DEFAULT_POLICY
from worker.testing.amqp import Outgoing, Producer, VerdictCollector, rabbitmqctl
from worker.testing.fake_llm import answered_scores

THRESHOLDS = Policy.load(DEFAULT_POLICY).for_tenant(None).thresholds


# ---------------------------------------------------------------------------------------
# Collecting verdicts and dead letters (own connection, own thread, survives restarts),
# publishing with confirms, republishing what the broker did not confirm: the toolkit's
# ---------------------------------------------------------------------------------------

# Every verdict (its own quorum queue bound ``#``) and ``moderation.dead``; reconnects after
# a broker outage, and the verdict queue is durable, so nothing published meanwhile is missed.
Collector = VerdictCollector[Verdict]


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
    "you are so stupid, honestly",  # harassment 0.88 -> review
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
