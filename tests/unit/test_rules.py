"""The rules stage: modifiers, evasion caught, innocent text never blocked, dataset precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker._policy_file import parse_policy
from worker.evaluate import evaluate, load
from worker.models import Action
from worker.policy import Policy
from worker.rules import RulesEngine

from ..conftest import DATASET, ROOT

DATA = ROOT / "tests" / "data" / "rules"
DEFAULT = ROOT / "worker" / "policies" / "default.yaml"


def engine(yaml_text: str) -> RulesEngine:
    return RulesEngine(parse_policy(yaml_text, "test.yaml"))


@pytest.fixture(scope="module")
def default() -> RulesEngine:
    return Policy.load(DEFAULT).for_tenant(None).engine


def test_modifiers():
    rules = engine("""
rules:
  - {id: w, action: block, words: [ass]}
  - {id: s, action: review, substrings: [crap]}
  - {id: p, action: flag, prefixes: [scam]}
  - {id: x, action: flag, suffixes: [phobe]}
  - {id: d, action: review, domains: [bit.ly]}
  - {id: r, action: review, regex: [' \\d{3} \\d{4} ']}
""")
    assert rules.match("what an ass").action is Action.BLOCK
    assert rules.match("a classic assassin passage").action is None  # whole words only
    assert rules.match("scrappy").action is Action.REVIEW
    assert rules.match("scammers everywhere").action is Action.FLAG
    assert rules.match("a homophobe").action is Action.FLAG
    assert rules.match("see BIT.LY/abc").action is Action.REVIEW
    assert rules.match("call 555-1234").action is Action.REVIEW


def test_priority_negation_allowlist_and_spans():
    rules = engine("""
allow: [kill devil hills]
rules:
  - {id: low, action: review, priority: 1, words: [kill]}
  - {id: high, action: allow, priority: 9, words: [kill time]}
  - {id: neg, action: block, words: [you suck], unless: [lollipop]}
""")
    assert rules.match("let's kill time").action is Action.ALLOW
    assert rules.match("kill it").action is Action.REVIEW
    assert rules.match("visiting Kill Devil Hills").action is None
    assert rules.match("you suck at this lollipop game").action is None
    result = rules.match("well... Y O U  s.u.c.k")
    assert result.action is Action.BLOCK
    span = result.matches[0].spans[0]
    assert "well... Y O U  s.u.c.k"[span.start : span.end] == "Y O U  s.u.c.k"


def test_quoting_or_reporting_defers_a_block_to_the_llm(default: RulesEngine):
    assert default.match("I will kill you").action is Action.BLOCK
    quoted = default.match("He wrote 'I will kill you' under my post")
    assert quoted.action is None and quoted.matches[0].action == "llm"
    assert default.match("someone told me to kys, reported").action is None


def test_tenant_rules_replace_disable_and_inherit():
    policy = parse_policy(
        """
rules:
  - {id: a, action: block, words: [alpha]}
  - {id: b, action: block, words: [beta]}
tenants:
  t:
    disable: [b]
    rules:
      - {id: a, action: review, words: [alpha]}
""",
        "p.yaml",
    )
    tenant = RulesEngine(policy, policy.tenants["t"])
    assert tenant.match("alpha").action is Action.REVIEW
    assert tenant.match("beta").action is None


def _jsonl(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_evasion_corpus_is_caught(default: RulesEngine):
    rows = _jsonl("evasion.jsonl")
    results = [default.match(row["text"]) for row in rows]
    caught = sum(bool(r.matches) for r in results) / len(rows)
    blocked = sum(r.action is Action.BLOCK for r in results) / len(rows)
    print(f"evasion: {len(rows)} texts, caught by a rule {caught:.1%}, blocked {blocked:.1%}")
    assert caught >= 0.90 and blocked >= 0.85


def test_every_view_with_a_long_run_is_squeezed(default: RulesEngine):
    # "@aaron" makes the first view's long run ("aaaron"); the spaced-out slur is in
    # the joined view. A version squeezed only the first view with a run, and missed it.
    for text in ("@aaron you k-i-i-i-k-e", "@aaron you k-i-k-e"):
        result = default.match(text)
        assert result.action is Action.BLOCK, text
        assert [m.rule_id for m in result.matches] == ["hate.slur-at-person"]


def test_innocent_corpus_is_never_blocked(default: RulesEngine):
    rows = _jsonl("innocent.jsonl")
    blocked = [row["text"] for row in rows if default.match(row["text"]).action is Action.BLOCK]
    print(f"innocent: {len(rows)} texts, blocked {len(blocked)}")
    assert blocked == []


def test_rules_blocks_on_the_labelled_set_are_precise(pipeline_without_llm):
    report = evaluate(pipeline_without_llm, load(DATASET))
    block = report["rules_block"]
    print(
        f"samples-1680: rules blocked {block['count']}, judged {block['judged']}, "
        f"precision {block['precision']}"
    )
    assert block["judged"] >= 3 and block["precision"] >= 0.95


def test_eval_command_reads_csv_and_writes_json(tmp_path: Path):
    import subprocess
    import sys

    csv_path = tmp_path / "set.csv"
    csv_path.write_text("text,label\nI will kill you,1\nnice weather,0\ngo hang yourself,1\n")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "worker", "eval", str(csv_path), "--rules-only", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["overall"]["tp"] == 2 and report["overall"]["fp"] == 0
    assert "precision" in result.stdout and "decided by" in result.stdout
