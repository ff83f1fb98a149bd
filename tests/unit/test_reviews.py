"""The review store on the machine's PostgreSQL (a database of each test's own):
migrations, items stored once, decisions stored once, overrides, tenants apart."""

from __future__ import annotations

import psycopg
import pytest

from worker import _db
from worker.models import CATEGORIES, Action, Decision, Source, Verdict
from worker.reviews import (
    Overrides,
    ReviewItem,
    ReviewStore,
    UnknownRequest,
    items_body,
    read_items,
)


def verdict(rid: str, tenant: str | None = "shop", action: str = "review") -> Verdict:
    return Verdict(
        id=rid,
        tenant=tenant,
        action=Action(action),
        flagged=action != "allow",
        categories=dict.fromkeys(CATEGORIES, False),
        category_scores={**dict.fromkeys(CATEGORIES, 0.0), "harassment": 0.8},
        source=Source.LLM,
        policy_version="v1",
        latency_ms=12.0,
        author_id="u1",
    )


def item(rid: str, text: str = "you utter clown", tenant: str | None = "shop") -> ReviewItem:
    return ReviewItem(verdict(rid, tenant), text, "the parent post", f"digest-of-{text}")


@pytest.fixture
def store(database_url: str):
    _db.upgrade(database_url)
    s = ReviewStore(database_url)
    yield s
    s.close()


def test_a_batch_message_carries_its_items_and_a_single_item_still_reads() -> None:
    first = ReviewItem(verdict("r1"), "you utter clown", None, "d1", at=1700000000.5)
    second = ReviewItem(verdict("r2", None), 'a "quoted" \u2028 text', "ctx", "d2", at=1.0)
    written = first.verdict.model_dump_json().encode()  # as the verdicts exchange got it
    body = items_body([(first, written), (second, None)])
    assert read_items(body) == [first, second]
    assert read_items(first.to_json()) == [first]  # a queue written by an older worker


def test_the_worker_refuses_a_database_that_is_behind(database_url):
    with pytest.raises(_db.DatabaseBehind, match="python -m worker db upgrade"):
        _db.require_current(database_url)
    assert _db.upgrade(database_url) == ["0001_reviews"]
    assert _db.upgrade(database_url) == []  # idempotent
    _db.require_current(database_url)
    assert _db.status(database_url) == (1, 1)


def test_items_are_stored_once_with_what_a_reviewer_needs(store):
    store.record([item("r1"), item("r2", "another text")])
    store.record([item("r1")])  # a redelivery
    queue = store.pending("shop")
    assert [q["id"] for q in queue] == ["r1", "r2"]  # oldest first
    assert queue[0]["text"] == "you utter clown" and queue[0]["context"] == "the parent post"
    assert queue[0]["verdict"]["category_scores"]["harassment"] == 0.8
    assert store.pending("forum") == []  # another tenant sees none of them


def test_a_decision_is_stored_once_and_becomes_the_final_verdict_and_an_override(store):
    store.record([item("r1")])
    decision = Decision(
        id="r1",
        tenant="shop",
        decision="block",
        categories=["harassment"],
        reviewer="ana",
        note="targeted",
    )
    final = store.decide(decision)
    assert final is not None and final.source == Source.HUMAN and final.action == Action.BLOCK
    assert final.categories["harassment"] and not final.categories["hate"]
    assert final.reason == "reviewer ana decided block: targeted"
    assert store.decide(decision) is None  # the same reviewer again: stored once
    assert store.pending("shop") == []  # decided: out of the queue
    overrides = Overrides()
    assert overrides.refresh(store) == 1
    found = overrides.get("shop", "v1", "digest-of-you utter clown")
    assert found is not None and found.decision == Action.BLOCK and found.reviewer == "ana"
    assert overrides.get("forum", "v1", "digest-of-you utter clown") is None  # per tenant
    assert overrides.get("shop", "v2", "digest-of-you utter clown") is None  # per policy
    assert overrides.refresh(store) == 0  # only what is new is read again


def test_a_later_decision_replaces_the_override_and_an_escalation_makes_none(store):
    store.record([item("r1"), item("r2"), item("r3", "something else")])
    store.decide(Decision(id="r1", tenant="shop", decision="block", reviewer="ana"))
    store.decide(Decision(id="r2", tenant="shop", decision="allow", reviewer="ben"))
    store.decide(Decision(id="r3", tenant="shop", decision="review", reviewer="ana"))
    overrides = Overrides()
    overrides.refresh(store)
    found = overrides.get("shop", "v1", "digest-of-you utter clown")
    assert found is not None and found.decision == Action.ALLOW and found.reviewer == "ben"
    assert overrides.get("shop", "v1", "digest-of-something else") is None
    assert len(overrides) == 1


def test_a_decision_for_an_unknown_request_or_another_tenant_is_refused(store):
    store.record([item("r1")])
    with pytest.raises(UnknownRequest):
        store.decide(Decision(id="nope", tenant="shop", decision="allow", reviewer="ana"))
    with pytest.raises(UnknownRequest):  # a reviewer of the forum cannot decide the shop's
        store.decide(Decision(id="r1", tenant="forum", decision="allow", reviewer="eve"))
    with psycopg.connect(store.url) as conn:
        assert conn.execute("SELECT count(*) FROM review_decisions").fetchone() == (0,)
