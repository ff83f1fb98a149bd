"""Signal rules: the ``signals:`` section validated on load, then evaluated on a request
and the counts the counters found (no Redis here: counts are given)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from worker._signal_rules import account_age_days, has_link
from worker.models import Action, ModerationRequest
from worker.policy import Policy, PolicyError
from worker.signals import Signals, Windows

BASE = """
name: signals-test
signals:
  rules:
    - id: s.flood
      rate: {per: author, over: 10s, more_than: 3}
      action: flag
      reason: flood
    - id: s.wave
      duplicate: {authors: ">= 5", within: 1m}
      action: review
    - id: s.new-link
      when: {author.account_age_days: "< 7", has_link: true}
      action: flag
    - id: s.repeat
      history: {violations_24h: ">= 3"}
      escalate: {flag: review}
    - id: s.trusted
      when: {author.trust: ">= 0.9"}
      escalate: {review: flag}
      exempt: apply
tenants:
  strict:
    signals:
      rules:
        - id: s.flood
          rate: {per: author, over: 10s, more_than: 1}
          action: block
          then: stop
  lax:
    disable: ["s.*"]
"""


def load(tmp_path: Path, text: str = BASE) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return Policy.load(path)


def request(author: dict[str, object] | None = None, **fields: object) -> ModerationRequest:
    return ModerationRequest.model_validate(
        {"id": "m1", "text": "hello there", **fields, **({"author": author} if author else {})}
    )


def counts(messages: int = 1, authors: int = 1, violations: int = 0) -> Signals:
    return Signals(messages={10.0: messages}, duplicate_authors=authors, violations=violations)


def fired(decision, action: Action = Action.ALLOW) -> tuple[str, list[str]]:
    final, signals = decision.apply(action)
    return final.value, [s.rule_id for s in signals]


def test_the_counts_a_policy_needs_are_the_windows_of_its_rules(tmp_path):
    policy = load(tmp_path)
    assert policy.windows == Windows(rate_s=(10.0,), duplicate_s=60.0, history_s=86_400.0)
    assert load(tmp_path, "name: x\n").windows is None  # nothing is sent to Redis


def test_calm_traffic_fires_nothing(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    decision = rules.evaluate(request({"id": "a"}), counts(), [])
    assert fired(decision) == ("allow", [])
    assert not decision.unavailable


def test_a_flood_and_a_wave_are_floors_with_what_they_saw(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    decision = rules.evaluate(request({"id": "a"}), counts(messages=4, authors=5), [])
    action, signals = decision.apply(Action.ALLOW)
    assert action == Action.REVIEW
    by_id = {s.rule_id: s for s in signals}
    assert set(by_id) == {"s.flood", "s.wave"}
    assert by_id["s.flood"].observed == {"messages_10s": 4}
    assert by_id["s.flood"].reason == "flood"
    # a floor never lowers what the text said
    assert decision.apply(Action.BLOCK)[0] == Action.BLOCK
    # one message under the limit is nothing
    assert fired(rules.evaluate(request({"id": "a"}), counts(messages=3), [])) == ("allow", [])


def test_a_new_account_with_a_link(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    new = {"id": "a", "account_age_days": 2}
    link = "see https://example.test/x"
    assert fired(rules.evaluate(request(new, text=link), counts(), [])) == ("flag", ["s.new-link"])
    old = {"id": "a", "account_age_days": 30}
    assert fired(rules.evaluate(request(old, text=link), counts(), [])) == ("allow", [])
    assert fired(rules.evaluate(request(new), counts(), [])) == ("allow", [])
    born = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    by_date = request({"id": "a", "created_at": born}, text="www.example.test")
    assert fired(rules.evaluate(by_date, counts(), [])) == ("flag", ["s.new-link"])


def test_the_third_violation_escalates_only_when_it_is_one(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    third = rules.evaluate(request({"id": "a"}), counts(violations=2), [])
    assert fired(third, Action.FLAG) == ("review", ["s.repeat"])  # two before, this one
    assert fired(third, Action.ALLOW) == ("allow", [])  # an innocent message stays so
    second = rules.evaluate(request({"id": "a"}), counts(violations=1), [])
    assert fired(second, Action.FLAG) == ("flag", [])


def test_trusted_authors_get_a_lighter_action(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    trusted = rules.evaluate(request({"id": "a", "trust": 0.95}), counts(), [])
    assert fired(trusted, Action.REVIEW) == ("flag", ["s.trusted"])
    assert fired(trusted, Action.BLOCK) == ("block", [])  # only review is lightened
    other = rules.evaluate(request({"id": "a", "trust": 0.5}), counts(), [])
    assert fired(other, Action.REVIEW) == ("review", [])


def test_exempt_authors_skip_what_the_tenant_says(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    moderator = {"id": "mod", "exempt": True, "trust": 0.99}
    decision = rules.evaluate(request(moderator), counts(messages=50, authors=9), [])
    # flood and wave skip exempt authors (the default), s.trusted says "apply"
    assert fired(decision, Action.REVIEW) == ("flag", ["s.trusted"])


def test_tenants_replace_or_disable_signal_rules(tmp_path):
    policy = load(tmp_path)
    strict = policy.for_tenant("strict").signals.evaluate(request({"id": "a"}), counts(2), [])
    assert strict.stop and fired(strict) == ("block", ["s.flood"])
    lax = policy.for_tenant("lax").signals.evaluate(
        request({"id": "a", "account_age_days": 0}, text="https://x.test"), counts(99, 99), []
    )
    assert fired(lax) == ("allow", [])


def test_without_counts_the_count_rules_are_unavailable_the_others_still_fire(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    new = {"id": "a", "account_age_days": 1}
    decision = rules.evaluate(request(new, text="https://x.test"), None, [])
    assert decision.unavailable
    assert fired(decision) == ("flag", ["s.new-link"])


def test_a_message_without_an_author_fires_no_author_rule(tmp_path):
    rules = load(tmp_path).for_tenant(None).signals
    decision = rules.evaluate(request(None, text="https://x.test"), None, [])
    assert fired(decision) == ("allow", []) and not decision.unavailable


def test_conditions_combine_with_text_rule_matches(tmp_path):
    policy = load(
        tmp_path,
        """
signals:
  rules:
    - id: s.insult-from-new
      matched: ["t.*"]
      when: {author.account_age_days: "< 1"}
      action: block
rules:
  - id: t.insult
    action: flag
    words: [you clown]
""",
    )
    rules = policy.for_tenant(None).signals
    new = {"id": "a", "account_age_days": 0.5}
    assert fired(rules.evaluate(request(new), counts(), ["t.insult"])) == (
        "block",
        ["s.insult-from-new"],
    )
    assert fired(rules.evaluate(request(new), counts(), [])) == ("allow", [])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{id: x, rate: {over: 10s, more_than: 3}}", "exactly one of action or escalate"),
        ("{id: x, rate: {over: 10 parsecs, more_than: 3}, action: flag}", "not a duration"),
        ("{id: x, rate: {over: 10s, more_than: 3, per: ip}, action: flag}", "per"),
        ("{id: x, duplicate: {authors: 'about 20', within: 1m}, action: flag}", "comparison"),
        ("{id: x, duplicate: {authors: '>= 500', within: 1m}, action: flag}", "never hold"),
        ("{id: x, when: {author.karma: '> 5'}, action: flag}", "unknown key 'author.karma'"),
        ("{id: x, when: {has_link: 'yes'}, action: flag}", "true or false"),
        ("{id: x, history: {violations_today: '>= 3'}, action: flag}", "violations_<window>"),
        ("{id: x, escalate: {flag: review}, then: stop}", "then: stop needs an action"),
        ("{id: x, rate: {over: 10s, more_than: 3}, action: allow}", "action"),
    ],
)
def test_a_mistake_is_an_error_naming_the_rule_on_load(tmp_path, rule, message):
    path = tmp_path / "policy.yaml"
    path.write_text(f"signals:\n  rules:\n    - {rule}\n")
    with pytest.raises(PolicyError) as err:
        Policy.load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_links_and_account_age():
    assert has_link("look at https://a.test") and has_link("go to www.a.test now")
    assert has_link("shop at cheap-pills.com today")
    assert not has_link("I said so. Then left.") and not has_link("e.g. this")
    created = datetime.now(UTC) - timedelta(days=3)
    assert account_age_days(request({"id": "a", "created_at": created.isoformat()})) == (
        pytest.approx(3, abs=0.01)
    )
    assert account_age_days(request({"id": "a", "account_age_days": 9})) == 9
    assert account_age_days(request({"id": "a"})) is None
