"""Policy file: validation with file/line/rule errors, thresholds, tenants, reload, shadow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from worker.models import CATEGORIES, Action
from worker.policy import Policy, PolicyError, PolicyStore, decide

BASE = """
name: test
thresholds:
  default: {flag: 0.4, review: 0.7, block: 0.9}
  sexual/minors: {review: 0.1, block: 0.3}
fallback: {action: review, categories: {sexual/minors: block}}
rules:
  - id: t.threat
    action: block
    category: violence
    words: [i will hurt you]
tenants:
  gym:
    thresholds:
      violence: {review: 0.95}
    rules:
      - id: t.gym
        action: allow
        priority: 200
        words: [killer workout]
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_decide_takes_the_most_severe_category(tmp_path):
    policy = Policy.load(write(tmp_path, BASE))
    thresholds = policy.for_tenant(None).thresholds
    scores = dict.fromkeys(CATEGORIES, 0.0) | {"hate": 0.75, "sexual/minors": 0.35}
    action, flagged = decide(scores, thresholds)
    assert action is Action.BLOCK and flagged["hate"] and flagged["sexual/minors"]
    assert decide(dict.fromkeys(CATEGORIES, 0.0), thresholds) == (
        Action.ALLOW,
        dict.fromkeys(CATEGORIES, False),
    )


def test_tenants_inherit_and_override(tmp_path):
    policy = Policy.load(write(tmp_path, BASE))
    gym = policy.for_tenant("gym")
    assert gym.thresholds["violence"].review == 0.95
    assert gym.thresholds["sexual/minors"].block == 0.3  # inherited
    assert gym.engine.match("that killer workout").action is Action.ALLOW
    assert policy.for_tenant(None).engine.match("that killer workout").action is None
    assert policy.for_tenant("unknown") is policy.for_tenant(None)


def test_version_follows_meaning_not_formatting(tmp_path):
    a = Policy.load(write(tmp_path, BASE, "a.yaml")).version
    b = Policy.load(write(tmp_path, BASE.replace("name: test", "name:    test"), "b.yaml")).version
    c = Policy.load(write(tmp_path, BASE.replace("0.95", "0.96"), "c.yaml")).version
    assert a == b != c


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            "rules:\n  - id: ok\n    action: block\n    words: [x]\n  - id: bad\n    action: nuke\n"
            "    words: [y]\n",
            ":6 (rule bad): rules.1.action",
        ),
        ("rules:\n  - id: r1\n    action: block\n", "(rule r1)"),
        ("rules:\n  - id: r2\n    action: block\n    regex: ['(unclosed']\n", "does not compile"),
        ("thresholds:\n  hateful: {block: 0.5}\n", "thresholds.hateful"),
        ("rules: [\n", "not valid YAML"),
        (
            "rules:\n  - id: r3\n    action: block\n    languages: [German]\n    words: [x]\n",
            "(rule r3): rules.0.languages.0",
        ),
        ("rules:\n  - id: r4\n    action: flag\n    then: later\n    words: [x]\n", "(rule r4)"),
        ("language_thresholds:\n  de: {hateful: {block: 0.5}}\n", "language_thresholds.de"),
    ],
)
def test_invalid_policies_name_file_line_and_rule(tmp_path, broken: str, message: str):
    path = write(tmp_path, broken)
    with pytest.raises(PolicyError) as err:
        Policy.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_reload_on_change_and_keep_last_good_on_error(tmp_path):
    path = write(tmp_path, BASE)
    store = PolicyStore(path, check_every_s=0)
    first = store.current.version
    path.write_text(BASE.replace("i will hurt you", "i will end you"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    store.current  # noqa: B018 - notices the change: compiles it in the background
    store.settle()
    assert store.current.version != first
    assert store.current.for_tenant(None).engine.match("i will end you").action is Action.BLOCK
    good = store.current.version
    path.write_text("rules: [\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    store.current  # noqa: B018 - starts the reload
    store.settle()
    assert store.current.version == good


def test_shadow_policy_is_recorded_not_enforced(tmp_path, pipeline_without_llm):
    write(tmp_path, BASE.replace("i will hurt you", "i will end you"), "next.yaml")
    main = write(tmp_path, BASE + "shadow: next.yaml\n")
    policy = Policy.load(main)
    assert policy.shadow is not None
    pipeline_without_llm.policies = PolicyStore(main)
    from worker.validate import Envelope

    [verdict] = pipeline_without_llm.run([Envelope(b'{"id": "1", "text": "i will end you"}')])
    assert verdict.action == "review" and verdict.source == "fallback"  # enforced: base
    [verdict] = pipeline_without_llm.run([Envelope(b'{"id": "2", "text": "i will hurt you"}')])
    assert verdict.action == "block"
    assert verdict.shadow == {
        "policy_version": policy.shadow.version,
        "action": None,
        "rule_ids": [],
    }


def test_tenants_choose_which_actions_the_review_store_records(tmp_path):
    policy = Policy.load(
        write(
            tmp_path,
            "review_store: [review]\ntenants:\n"
            "  strict:\n    review_store: [review, block]\n  plain: {}\n",
        )
    )
    assert policy.for_tenant(None).review_store == ("review",)
    assert policy.for_tenant("strict").review_store == ("review", "block")
    assert policy.for_tenant("plain").review_store == ("review",)  # the base's
    assert Policy.load(write(tmp_path, "name: x\n", "q.yaml")).for_tenant(None).review_store is None
