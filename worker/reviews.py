"""The review store: verdicts people look at, their decisions, and overrides.

A verdict whose action the tenant records (``review`` by default) goes, besides the
verdicts exchange, onto ``moderation.reviews`` with the text a reviewer needs; the
worker's ``Reviews`` step writes those to PostgreSQL in batches and acks them once
committed, so the store is off the verdict path and nothing is lost when it is slow or
down (the queue holds them). A decision (``moderation.decisions``) is stored once per
request and reviewer, becomes an override for the same normalised text, tenant and
policy version, and is published as the request's final verdict (``source: human``).
Every worker reads new overrides every few seconds (``Overrides``) and decides such a
text by the person's decision instead of sending it to review again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from worker import _db
from worker.models import CATEGORIES, Action, Decision, EarlierDecision, Source, Verdict

__all__ = [
    "Decided",
    "Override",
    "Overrides",
    "ReviewItem",
    "ReviewStore",
    "UnknownRequest",
    "items_body",
    "read_items",
]


class UnknownRequest(LookupError):
    """A decision for a request the store never recorded."""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """What the store keeps of a recorded verdict (the queue message's body)."""

    verdict: Verdict
    text: str
    context: str | None
    text_digest: str
    at: float = 0.0  # when the worker decided it (epoch seconds): the queue's order

    def to_json(self, verdict_json: bytes | None = None) -> bytes:
        """``verdict_json``: the verdict as already written for the verdicts exchange."""
        return orjson.dumps(self._fields(verdict_json))

    def _fields(self, verdict_json: bytes | None) -> dict[str, Any]:
        verdict = self.verdict.model_dump_json().encode() if verdict_json is None else verdict_json
        return {
            "verdict": orjson.Fragment(verdict),
            "text": self.text,
            "context": self.context,
            "text_digest": self.text_digest,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, body: bytes) -> ReviewItem:
        return cls._from_fields(orjson.loads(body))

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> ReviewItem:
        return cls(
            Verdict.model_validate(data["verdict"]),
            data["text"],
            data.get("context"),
            data["text_digest"],
            float(data.get("at") or time.time()),
        )


def items_body(items: Sequence[tuple[ReviewItem, bytes | None]]) -> bytes:
    """One queue message for the review items of one published batch of verdicts: a
    message per item cost the broker (a quorum queue's write) and the publisher as much
    as the verdict itself, and slowed the verdict path when most verdicts are reviews."""
    return orjson.dumps({"items": [item._fields(verdict) for item, verdict in items]})


def read_items(body: bytes) -> list[ReviewItem]:
    """The items of a ``moderation.reviews`` message: a batch (``items_body``) or one
    item (``ReviewItem.to_json``)."""
    data = orjson.loads(body)
    if isinstance(data, dict) and "items" in data:
        return [ReviewItem._from_fields(fields) for fields in data["items"]]
    return [ReviewItem._from_fields(data)]


@dataclass(frozen=True, slots=True)
class Override:
    decision: Action
    categories: tuple[str, ...]
    reviewer: str
    request_id: str
    policy_version: str = ""

    def as_earlier(self) -> EarlierDecision:
        return EarlierDecision(
            decision=self.decision.value,
            categories=list(self.categories),  # type: ignore[arg-type]
            reviewer=self.reviewer,
            request_id=self.request_id,
            policy_version=self.policy_version,
        )


class ReviewStore:
    """PostgreSQL side; one connection, used from one thread at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = _db.connect(url)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def record(self, items: Sequence[ReviewItem]) -> None:
        """Store items, in one transaction; a redelivered one is stored once."""
        if not items:
            return
        rows = [
            (
                i.verdict.id,
                i.verdict.tenant or "",
                i.verdict.action.value,
                i.text,
                i.context,
                i.text_digest,
                i.verdict.author_id,
                i.verdict.policy_version,
                Jsonb(i.verdict.model_dump(mode="json")),
                i.at or time.time(),
            )
            for i in items
        ]
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO review_items (request_id, tenant, action, text, context, "
                "text_digest, author_id, policy_version, verdict, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s)) "
                "ON CONFLICT DO NOTHING",
                rows,
            )

    def decide(self, decision: Decision) -> Verdict | None:
        """Store a decision; the request's final verdict, or ``None`` when this reviewer's
        decision on it was stored before (a redelivery). Raises ``UnknownRequest``."""
        tenant = decision.tenant or ""
        with self._lock, self._conn.transaction():
            item = self._conn.execute(
                "SELECT text_digest, policy_version, verdict FROM review_items "
                "WHERE tenant = %s AND request_id = %s",
                (tenant, decision.id),
            ).fetchone()
            if item is None:
                raise UnknownRequest(f"no review item {decision.id!r} for tenant {tenant!r}")
            digest, version, stored = item
            inserted = self._conn.execute(
                "INSERT INTO review_decisions (request_id, tenant, reviewer, decision, "
                "categories, note) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    decision.id,
                    tenant,
                    decision.reviewer,
                    decision.decision,
                    list(decision.categories),
                    decision.note,
                ),
            ).rowcount
            if not inserted:
                return None
            self._conn.execute(
                "UPDATE review_items SET decided_at = now() WHERE tenant = %s AND request_id = %s",
                (tenant, decision.id),
            )
            if decision.decision != Action.REVIEW.value:  # an escalation decides nothing
                self._conn.execute(
                    "INSERT INTO review_overrides (tenant, policy_version, text_digest, "
                    "decision, categories, reviewer, request_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (tenant, policy_version, text_digest) DO UPDATE SET "
                    "decision = EXCLUDED.decision, categories = EXCLUDED.categories, "
                    "reviewer = EXCLUDED.reviewer, request_id = EXCLUDED.request_id, "
                    "updated_at = clock_timestamp()",
                    (
                        tenant,
                        version,
                        digest,
                        decision.decision,
                        list(decision.categories),
                        decision.reviewer,
                        decision.id,
                    ),
                )
        return human_verdict(Verdict.model_validate(stored), decision)

    def overrides_since(
        self, after: datetime | None
    ) -> list[tuple[tuple[str, str, str], Override, datetime]]:
        with self._lock, self._conn.transaction():
            rows = self._conn.execute(
                "SELECT tenant, policy_version, text_digest, decision, categories, reviewer, "
                "request_id, updated_at FROM review_overrides "
                "WHERE %s::timestamptz IS NULL OR updated_at > %s ORDER BY updated_at",
                (after, after),
            ).fetchall()
        return [
            ((t, v, d), Override(Action(a), tuple(c), r, rid, v), at)
            for t, v, d, a, c, r, rid, at in rows
        ]

    def decided(self, tenant: str | None = None) -> list[Decided]:
        """Every decided item (the latest decision per item; escalations left out)."""
        with self._lock, self._conn.transaction():
            rows = self._conn.execute(
                "SELECT DISTINCT ON (i.tenant, i.request_id) i.request_id, i.tenant, i.text, "
                "d.decision, d.categories, i.verdict FROM review_items i JOIN review_decisions d "
                "USING (tenant, request_id) WHERE d.decision <> 'review' "
                "AND (%s::text IS NULL OR i.tenant = %s) "
                "ORDER BY i.tenant, i.request_id, d.decided_at DESC",
                (tenant, tenant),
            ).fetchall()
        return [
            Decided(rid, t, text, Action(d), tuple(c), v.get("category_scores") or {}, v["source"])
            for rid, t, text, d, c, v in rows
        ]

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def pending(self, tenant: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """The queue, oldest first (for the page and the tests)."""
        with self._lock, self._conn.transaction():
            rows = self._conn.execute(
                "SELECT request_id, action, text, context, verdict, received_at FROM "
                "review_items WHERE tenant = %s AND decided_at IS NULL "
                "ORDER BY received_at, request_id LIMIT %s",
                (tenant or "", limit),
            ).fetchall()
        return [
            dict(zip(("id", "action", "text", "context", "verdict", "received_at"), r, strict=True))
            for r in rows
        ]


@dataclass(frozen=True, slots=True)
class Decided:
    """A stored item with its latest decision: what calibrate and eval learn from."""

    request_id: str
    tenant: str
    text: str
    decision: Action
    categories: tuple[str, ...]
    scores: dict[str, float]
    source: str  # what decided the item before the person did


def human_verdict(original: Verdict, decision: Decision) -> Verdict:
    """The request's final verdict, as the reviewer decided it."""
    action = Action(decision.decision)
    chosen = set(decision.categories)
    reason = f"reviewer {decision.reviewer} decided {action.value}"
    if decision.note:
        reason += f": {decision.note}"
    return original.model_copy(
        update={
            "action": action,
            "flagged": action is not Action.ALLOW,
            "categories": {c: c in chosen for c in CATEGORIES},
            "source": Source.HUMAN,
            "reason": reason,
            "user_reason": None,
            "usage": original.usage.model_copy(
                update={"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
            ),
            "cost_usd": 0.0,
            "redelivered": False,
            "latency_ms": 0.0,
        }
    )


class Overrides:
    """The overrides in force, in memory: read by the pipeline on the loop thread,
    refreshed from the store by the ``Reviews`` step's thread."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], Override] = {}
        self._latest: dict[tuple[str, str], Override] = {}  # any policy version
        self._seen: datetime | None = None

    def get(self, tenant: str | None, policy_version: str, digest: str) -> Override | None:
        if not self._by_key:
            return None
        return self._by_key.get((tenant or "", policy_version, digest))

    def earlier(self, tenant: str | None, digest: str) -> Override | None:
        """The latest decision on this text under any policy version: when ``get`` finds
        none for the current one, a decision made under an older policy, which the
        pipeline does not apply (the policy changed) but shows to reviewers when the
        new policy decides otherwise."""
        return self._latest.get((tenant or "", digest))

    def add(self, rows: Iterable[tuple[tuple[str, str, str], Override, datetime]]) -> None:
        for key, override, at in rows:  # in the order they were decided
            self._by_key[key] = override  # a dict item assignment is atomic
            self._latest[(key[0], key[2])] = override
            self._seen = at if self._seen is None or at > self._seen else self._seen

    def refresh(self, store: ReviewStore) -> int:
        rows = store.overrides_since(self._seen)
        self.add(rows)
        return len(rows)

    def __len__(self) -> int:
        return len(self._by_key)
