"""Humans in the loop, end to end: a real worker, RabbitMQ and PostgreSQL. A review
verdict is stored with its text, a decision on ``moderation.decisions`` is published as
the final verdict (``source: human``), and the next identical text is decided by it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from kombu import Connection, Exchange, Producer

from worker import _db
from worker.client import ModerationClient

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def _decide(broker_url: str, decision: dict[str, object]) -> None:
    with Connection(broker_url) as connection:
        Producer(connection.channel(), exchange=Exchange("")).publish(
            json.dumps(decision),
            routing_key="moderation.decisions",
            content_type="application/json",
            delivery_mode=2,
        )


def _stored(database_url: str, request_id: str, timeout: float = 20.0) -> tuple[object, ...]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT text, action, tenant, author_id FROM review_items WHERE request_id = %s",
                (request_id,),
            ).fetchone()
            if row is not None:
                return tuple(row)
            if time.monotonic() > deadline:
                pytest.fail(f"{request_id} was never stored")
            time.sleep(0.1)


def test_the_worker_refuses_to_start_on_a_database_behind_its_code(start_worker, database_url):
    worker = start_worker(wait=False, MODERATION_DATABASE_URL=database_url)
    assert worker.proc is not None
    assert worker.proc.wait(60) != 0
    assert "python -m worker db upgrade" in worker.output()


@pytest.fixture
def review_store(worker_env: dict[str, str], tmp_path) -> Iterator[Callable[[str], None]]:
    """Starts ``python -m worker review-store`` (stopped after the test)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(database_url: str) -> None:
        log = (tmp_path / "review-store.log").open("wb")
        env = {**worker_env, "MODERATION_DATABASE_URL": database_url}
        procs.append(
            subprocess.Popen([sys.executable, "-m", "worker", "review-store"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        )  # fmt: skip

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("store", ["in the worker", "a process of its own"])
def test_review_decision_override_loop(
    start_worker, client: ModerationClient, database_url: str, broker_url: str, review_store,
    store: str,
):  # fmt: skip
    _db.upgrade(database_url)
    env = {"MODERATION_DATABASE_URL": database_url, "MODERATION_OVERRIDES_REFRESH_S": "0.2"}
    if store == "a process of its own":
        env["MODERATION_REVIEW_STORE_IN_WORKER"] = "false"
        review_store(database_url)
    start_worker(**env)
    text = "fuck you, seriously"
    with client.subscribe("#") as verdicts:
        client.publish({"id": "r1", "text": text, "tenant": "shop", "author": {"id": "u7"}})
        (first,) = verdicts.drain(1, timeout=30)
        assert first.action == "review" and first.source == "rules"
        assert _stored(database_url, "r1") == (text, "review", "shop", "u7")

        _decide(
            broker_url,
            {
                "id": "r1",
                "tenant": "shop",
                "decision": "allow",
                "reviewer": "ana",
                "note": "banter between friends",
            },
        )
        (final,) = verdicts.drain(1, timeout=30)
        assert final.id == "r1" and final.source == "human" and final.action == "allow"
        assert final.reason == "reviewer ana decided allow: banter between friends"

        # the same decision again (a redelivery, a double click): no second verdict
        _decide(broker_url, {"id": "r1", "tenant": "shop", "decision": "allow", "reviewer": "ana"})
        # a decision on nothing the store holds is dead-lettered with its reason
        _decide(broker_url, {"id": "ghost", "tenant": "shop", "decision": "block", "reviewer": "x"})
        time.sleep(1.0)  # the overrides are read again every 0.2 s

        # the same normalised text again: the person's decision, not another review
        client.publish({"id": "r2", "text": "FUCK  you, seriously", "tenant": "shop"})
        # but not for another tenant
        client.publish({"id": "r3", "text": text, "tenant": "forum"})
        got = {v.id: v for v in verdicts.drain(2, timeout=30)}
        assert set(got) == {"r2", "r3"}, "a duplicate decision made a second verdict"
        assert got["r2"].source == "human" and got["r2"].action == "allow"
        assert "reviewer ana" in (got["r2"].reason or "")
        assert got["r3"].source == "rules" and got["r3"].action == "review"
    dead = {d.headers.get("x-moderation-reason") for d in client.dead_letters(timeout=5)}
    assert "unknown_request" in dead
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM review_decisions").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM review_items").fetchone() == (2,)  # r1, r3


def test_a_policy_change_that_decides_otherwise_goes_to_reviewers(
    start_worker, client: ModerationClient, database_url: str, broker_url: str, tmp_path
):
    """An override holds for the policy version it was made under; under a new version
    the text is decided again, and where that differs from the person's decision the
    verdict names it and goes to the review queue with a note on the page."""
    from worker.review_ui import _view
    from worker.reviews import ReviewStore

    _db.upgrade(database_url)
    default = (ROOT / "worker" / "policies" / "default.yaml").read_text()
    policy = tmp_path / "policy.yaml"
    policy.write_text(default)
    start_worker(
        MODERATION_DATABASE_URL=database_url,
        MODERATION_OVERRIDES_REFRESH_S="0.2",
        MODERATION_POLICY=str(policy),
        MODERATION_POLICY_RELOAD_S="0.2",
    )
    text = "fuck you, seriously"
    with client.subscribe("#") as verdicts:
        client.publish({"id": "p1", "text": text, "tenant": "shop"})
        (first,) = verdicts.drain(1, timeout=30)
        assert first.action == "review" and first.earlier_decision is None
        _stored(database_url, "p1")
        _decide(broker_url, {"id": "p1", "tenant": "shop", "decision": "allow", "reviewer": "ana"})
        (final,) = verdicts.drain(1, timeout=30)
        assert final.source == "human"
        time.sleep(1.0)
        client.publish({"id": "p2", "text": text, "tenant": "shop"})
        (same,) = verdicts.drain(1, timeout=30)
        assert same.source == "human" and same.action == "allow"

        # a new policy version (a threshold moved): the rules decide the text again
        policy.write_text(default.replace("default: {flag: 0.40,", "default: {flag: 0.41,"))
        deadline = time.monotonic() + 30
        while True:
            client.publish({"id": "p3", "text": text, "tenant": "shop"})
            (again,) = verdicts.drain(1, timeout=30)
            if again.policy_version != first.policy_version or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert again.policy_version != first.policy_version, "the policy was never reloaded"
    assert again.source == "rules" and again.action == "review"
    assert again.earlier_decision is not None
    assert again.earlier_decision.decision == "allow" and again.earlier_decision.reviewer == "ana"
    assert again.earlier_decision.policy_version == first.policy_version
    _stored(database_url, "p3")
    store = ReviewStore(database_url)
    try:
        (row,) = [r for r in store.pending("shop") if r["id"] == "p3"]
    finally:
        store.close()
    note = _view(row)["changed"]
    assert note and "ana decided allow" in note and first.policy_version in note
