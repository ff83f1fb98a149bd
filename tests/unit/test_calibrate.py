"""Thresholds from stored decisions (the machine's PostgreSQL), through the command
line as a user runs it, and eval on what reviewers decided."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from worker import _db
from worker.calibrate import calibrate
from worker.evaluate import from_reviews
from worker.models import CATEGORIES, Action, Decision, Source, Verdict
from worker.policy import Policy
from worker.reviews import ReviewItem, ReviewStore

from ..conftest import ROOT

# (harassment score, the reviewer's decision)
DECIDED = [(0.9, "block"), (0.8, "block"), (0.7, "block"), (0.75, "allow"), (0.6, "allow"),
           (0.5, "block")]  # fmt: skip


def _item(n: int, score: float) -> ReviewItem:
    verdict = Verdict(
        id=f"c{n}",
        tenant="shop",
        action=Action.REVIEW,
        flagged=True,
        categories=dict.fromkeys(CATEGORIES, False),
        category_scores={**dict.fromkeys(CATEGORIES, 0.0), "harassment": score},
        source=Source.LLM,
        policy_version="v1",
        latency_ms=1.0,
    )
    return ReviewItem(verdict, f"text number {n}", None, f"d{n}")


@pytest.fixture
def decided_store(database_url: str):
    _db.upgrade(database_url)
    store = ReviewStore(database_url)
    store.record([_item(n, score) for n, (score, _) in enumerate(DECIDED)])
    for n, (_, decision) in enumerate(DECIDED):
        categories = ["harassment"] if decision == "block" else []
        store.decide(
            Decision(
                id=f"c{n}", tenant="shop", decision=decision, categories=categories, reviewer="ana"
            )
        )
    store.decide(Decision(id="c0", tenant="shop", decision="block", reviewer="ben"))
    yield store
    store.close()


def test_the_lowest_threshold_that_reaches_the_precision(decided_store):
    items = decided_store.decided()
    assert len(items) == len(DECIDED)  # one (the latest) decision per item
    by_category = {t.category: t for t in calibrate(items, precision=0.75)}
    harassment = by_category["harassment"]
    assert (harassment.positives, harassment.negatives) == (4, 2)
    assert (harassment.threshold, harassment.precision, harassment.recall) == (0.7, 0.75, 0.75)
    strict = {t.category: t for t in calibrate(items, precision=0.9)}["harassment"]
    assert (strict.threshold, strict.precision, strict.recall) == (0.8, 1.0, 0.5)
    assert by_category["hate"].threshold is None  # no positives: nothing to fit


def test_calibrate_prints_and_writes_a_policy_patch(decided_store, tmp_path):
    out = tmp_path / "patch.yaml"
    env = {**os.environ, "MODERATION_DATABASE_URL": decided_store.url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "calibrate",
            "--precision",
            "0.75",
            "--tenant",
            "shop",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "6 decided items" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("harassment"))
    assert line.split() == ["harassment", "4", "2", "0.700", "0.750", "0.750"]
    patch = yaml.safe_load(out.read_text())
    assert patch == {"tenants": {"shop": {"thresholds": {"harassment": {"block": 0.7}}}}}
    (tmp_path / "policy.yaml").write_text(out.read_text())
    Policy.load(tmp_path / "policy.yaml")  # a valid policy layer


def test_eval_reads_what_reviewers_decided(decided_store):
    samples = from_reviews(decided_store.url)
    assert len(samples) == len(DECIDED)
    assert sum(1 for s in samples if s.any) == 4
    assert {s.group for s in samples} == {"reviews:shop"}
