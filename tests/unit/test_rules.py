"""The rules stage: modifiers, evasion caught, innocent text never blocked, dataset precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker._policy_file import parse_policy
from worker._rules_compile import masked_forms
from worker.evaluate import evaluate, load
from worker.language import LanguageDetector, LazyLanguage
from worker.models import Action
from worker.policy import Policy
from worker.rules import RulesEngine, RulesResult

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


def test_a_rule_set_is_disabled_by_its_prefix(default: RulesEngine):
    policy = parse_policy(DEFAULT.read_text(), "default.yaml")
    off = parse_policy("disable: ['profanity.*']", "tenant.yaml")
    assert default.match("fuck you").action is Action.REVIEW
    without = RulesEngine(policy, off)
    assert without.match("fuck you").action is None
    assert not any(r.id.startswith("profanity.") for r in without.rules)
    assert without.match("I will kill you").action is Action.BLOCK  # the rest stays


def test_masked_forms_hide_inner_letters_but_not_ordinary_words():
    assert masked_forms(" fuck you ") == [" f ck you ", " f k you ", " fu k you "]
    assert " c p " not in masked_forms(" crap ")  # "C.P. Snow"
    assert " sh t " in masked_forms(" shit ")
    assert " s it " not in masked_forms(" shit ")  # "what's it" reads "what s it"
    assert " a hole " not in masked_forms(" asshole ")  # "dig a hole"
    assert masked_forms(" ass ") == []  # too short to tell


@pytest.mark.parametrize(
    "text",
    [
        "f u c k you",
        "f*ck you",
        "f**k you",
        "fսck you",  # Armenian letter
        "fu\u200bck you",
        "ｆｕｃｋ you",
        "you dumb c*nt",
        "you are a b1tch",
        "stfu you worthless idiot",
        "@sam you are such a m0r0n",
        "idiots like you ruin everything",
        "sh*t like you",
    ],
)
def test_profanity_aimed_at_a_person_goes_to_review(default: RulesEngine, text: str):
    result = default.match(text)
    assert result.action is Action.REVIEW, (text, [m.rule_id for m in result.matches])
    assert result.matches[0].rule_id.startswith("profanity.")


@pytest.mark.parametrize(
    "text", ["fuck, I missed the bus", "this sh*t is hard", "a$$hole drivers everywhere"]
)
def test_bare_profanity_is_a_floor_for_the_llm_never_a_block(default: RulesEngine, text: str):
    result = default.match(text)
    assert result.action is None and result.floor is Action.FLAG
    assert [m.rule_id for m in result.matches] == ["profanity.bare"]


def test_a_floor_never_hides_a_rule_that_decides():
    rules = engine("""
rules:
  - {id: floor, action: flag, then: llm, priority: 20, words: [darn]}
  - {id: low, action: review, priority: 1, words: [scam]}
  - {id: allowed, action: allow, priority: 0, words: [darn good]}
""")
    alone = rules.match("darn it")
    assert (alone.action, alone.floor) == (None, Action.FLAG)  # on to the LLM, at least flag
    both = rules.match("darn, a scam")
    assert both.action is Action.REVIEW and both.rule is not None and both.rule.id == "low"
    allowed = rules.match("darn good coffee")  # decided, but not below the floor
    assert allowed.action is Action.FLAG


@pytest.mark.parametrize(
    "text",
    [
        "Scunthorpe United drew 1-1",
        "shiitake risotto tonight",
        "the assassin's creed",
        "the cockpit door",
        "Dickens wrote it",
        "what's it like there",
        "we dug a hole for the tree",
        "did you prick your finger?",
        "I'm such an idiot, I forgot my keys",
    ],
)
def test_words_that_contain_profanity_are_not_hit(default: RulesEngine, text: str):
    assert default.match(text).matches == [], text


def test_a_rule_for_some_languages_fires_only_there_or_where_none_can_be_told():
    rules = engine("""
rules:
  - {id: de, action: block, languages: [de], words: [gift]}
""")
    detector = LanguageDetector()

    def match(text: str) -> Action | None:
        return rules.match(text, language=LazyLanguage(text, detector)).action

    assert match("In dieser Flasche ist Gift, nicht trinken!") is Action.BLOCK
    assert match("I bought a gift for my sister's birthday.") is None  # surely English
    assert match("gift") is Action.BLOCK  # too short to tell: the rule fires
    assert rules.match("a gift").action is Action.BLOCK  # no language given: fires
    given = LazyLanguage("a gift", None, given="en")
    assert rules.match("a gift", language=given).action is None


def test_a_quoted_phrase_anywhere_inside_a_quotation_defers(default: RulesEngine):
    text = 'Deberían echarla por decir "Deberían matar a todos los judíos".'
    result = default.match(text, language=LazyLanguage(text, LanguageDetector()))
    assert result.action is None and result.matches[0].action == "llm"
    # apostrophes inside words are not quotation marks
    plain = "I'm telling you I'll kill you"
    assert default.match(plain).action is Action.BLOCK


def test_terms_in_other_scripts_match_their_own_letters():
    rules = engine("""
reported_speech: [举报]
rules:
  - {id: zh, action: block, words: [杀了你]}
  - {id: ru, action: block, words: [убью тебя], unless: [в игре]}
""")
    result = rules.match("我要杀 了 你!")  # no spaces between Chinese words, evasion or not
    assert result.action is Action.BLOCK
    span = result.matches[0].spans[0]
    assert "我要杀 了 你!"[span.start : span.end] == "杀 了 你"
    assert rules.match("Я тебя УБЬЮ тебя").action is Action.BLOCK
    assert rules.match("Я убью тебя в игре").action is None  # its unless, in Cyrillic
    assert rules.match("Яубьютебя").action is None  # Cyrillic words are whole words
    assert rules.match('我要举报: 他说 "我要杀了你"').action is None  # reported: the LLM
    assert rules.match("我爱你").matches == []


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


def _recognised(result: RulesResult) -> Action | None:
    """What a rule made of it: its decision, or the floor it set for the LLM."""
    return result.action or result.floor


def test_disguised_insults_are_recognised_and_bare_profanity_never_blocked(
    default: RulesEngine,
):
    rows = _jsonl("insults.jsonl")
    detector = LanguageDetector()
    found = [
        (row, _recognised(default.match(row["text"], language=LazyLanguage(row["text"], detector))))
        for row in rows
    ]
    recognised = sum(a in (Action.BLOCK, Action.REVIEW, Action.FLAG) for _, a in found)
    techniques = {t for row in rows for t in row["technique"].split("+")}
    print(
        f"insults: {len(rows)} texts, {len(techniques)} techniques, "
        f"recognised {recognised / len(rows):.1%}"
    )
    assert len(rows) >= 400 and len(techniques) >= 15
    assert recognised / len(rows) >= 0.90
    assert [
        r["text"] for r, a in found if r["kind"] == "bare_profanity" and a is Action.BLOCK
    ] == []
    slurs = [a for r, a in found if r["kind"] == "slur_at_person"]
    assert slurs.count(Action.BLOCK) / len(slurs) >= 0.85


def test_innocent_text_with_profanity_in_it_is_never_blocked(default: RulesEngine):
    rows = _jsonl("innocent_profanity.jsonl")
    results = [(row, default.match(row["text"])) for row in rows]
    blocked = [row["text"] for row, r in results if r.action is Action.BLOCK]
    hit = [row["text"] for row, r in results if not row["bare"] and _recognised(r)]
    print(f"innocent profanity: {len(rows)} texts, blocked {len(blocked)}, hit {len(hit)}")
    assert blocked == []
    assert len(hit) <= 0.02 * len(rows), hit  # words that merely contain profanity


LANGUAGES = ROOT / "tests" / "data" / "languages"


@pytest.mark.parametrize("code", ["de", "es", "fr", "pt", "hi"])
def test_each_language_s_threats_and_slurs_are_blocked_and_its_innocent_text_is_not(
    default: RulesEngine, code: str
):
    with (LANGUAGES / f"{code}.jsonl").open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    detector = LanguageDetector()
    results = [
        (row, default.match(row["text"], language=LazyLanguage(row["text"], detector)))
        for row in rows
    ]
    aimed = [r for row, r in results if row["kind"] in ("threat", "slur_at_person")]
    blocked = sum(r.action is Action.BLOCK for r in aimed) / len(aimed)
    innocent_blocked = [
        row["text"] for row, r in results if row["label"] == "innocent" and r.action is Action.BLOCK
    ]
    print(f"{code}: threats and slurs blocked {blocked:.1%}, innocent blocked {innocent_blocked}")
    assert blocked >= 0.85
    assert innocent_blocked == []


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
