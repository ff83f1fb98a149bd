"""The raw-text prescreen: it may send innocent text down the full path, but a text it
calls clean must fire no rule (a missed block is the one thing it must never cause)."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker._policy_file import parse_policy
from worker._raw_patterns import COARSE, READING, coarse, expression, render
from worker.evaluate import load
from worker.policy import Policy
from worker.rules import RulesEngine

from ..conftest import DATASET, ROOT

pytest.importorskip("hyperscan")

DATA = ROOT / "tests" / "data" / "rules"
DEFAULT = ROOT / "worker" / "policies" / "default.yaml"
MODIFIERS = """
allow: [kill devil hills]
reported_speech: [he said]
rules:
  - {id: w, action: block, words: [ass, kys, kill yourself, shoot up the school]}
  - {id: s, action: review, substrings: [crap]}
  - {id: p, action: flag, prefixes: [scam]}
  - {id: x, action: flag, suffixes: [phobe]}
  - {id: d, action: review, domains: [bit.ly]}
  - {id: n, action: block, words: [you suck], unless: [lollipop]}
  - {id: digits, action: review, words: [send 1 btc, "1488"]}
  - {id: r, action: review, regex: [' (free|cheap) (v[i1]agra|cialis)s? ', '(?: 0){4} ']}
  - {id: l, action: llm, words: [minor]}
"""


def unscreened(engine: RulesEngine) -> RulesEngine:
    """The same engine with the prescreen off: the full path decides every text."""
    full = copy.copy(engine)
    full._prescreen = None
    return full


@pytest.fixture(scope="module")
def engines() -> list[tuple[RulesEngine, RulesEngine]]:
    pairs = []
    for engine in (
        Policy.load(DEFAULT).for_tenant(None).engine,
        RulesEngine(parse_policy(MODIFIERS, "modifiers.yaml")),
    ):
        assert engine._prescreen is not None
        pairs.append((engine, unscreened(engine)))
    return pairs


def corpus() -> list[str]:
    texts = [sample.text for sample in load(DATASET)]
    for name in ("evasion.jsonl", "innocent.jsonl"):
        with open(DATA / name, encoding="utf-8") as lines:
            texts += [json.loads(line)["text"] for line in lines]
    return texts


def test_never_clears_what_the_full_path_fires_on(engines):
    texts = corpus()
    for engine, full in engines:
        fired = [t for t in texts if full.match(t).matches]
        assert len(fired) > 100  # the evasion corpus is in there
        missed = [t for t in fired if not engine._prescreen.could_fire(t)]
        assert missed == []
        assert all(engine.match(t) == full.match(t) for t in fired[:200])


def test_clears_most_ordinary_text(engines):
    engine, _ = engines[0]
    texts = [sample.text for sample in load(DATASET)]
    cleared = sum(not engine._prescreen.could_fire(t) for t in texts)
    assert cleared > 0.8 * len(texts)  # else the screen costs more than it saves
    assert not engine._prescreen.could_fire("See you at the Scunthorpe match, 7pm!")


@pytest.mark.parametrize(
    "text",
    [
        "\u202eflesruoy llik",  # shown as "kill yourself"
        "go \u202eflesruoy llik\u202c now",
        "k\u200by\u200bs",
        "a.s.s",
        "kyyyys",
        "what an @ss",
        "kÿs",
        "𝐤𝐲𝐬",
        "ｋｙｓ",
        "k y s",
        # an invisible character the views drop before spaced letters: a version looked
        # for it only after a letter, and its second look did not join "k|y|s"
        "\u202ck|y|s",
        "\u2069K|Y|S",
        "🔪k y s",
        "我k.y.s",  # a symbol or another script's letter right before them
        "kill yøurself",
        "KILL YØURSELF",
        "ᴋɪʟʟ yourself",  # Latin letters NFKD keeps whole
        "k🙂y🙂s",
        "k 🔪 y 🔪 s",
        "café k🙂y🙂s",  # emoji between spaced-out letters
        "🇰🇾🇸",
        "go 🇰🇾🇸 now",  # the letters flags are made of
        # ASCII disguises: control characters (they fold to nothing), separators,
        # spaced letters after leet, leet among a run, a long run
        "k\x00y\x01s",
        "please k\x7fys",
        "k-y-s now",
        "k1 y0u k.y.s",
        "a$$s",
        "kysss",
    ],
)
def test_sends_every_disguise_down_the_full_path(engines, text):
    engine, full = engines[1]
    assert full.match(text).matches, text  # the disguises the normaliser undoes
    assert engine._prescreen.could_fire(text)


def test_reading_only_merges_bytes_and_keeps_breaks_breaks():
    # the patterns read text through READING; a byte the views may read as a word
    # break must stay one ("@kill" is " kill " in the plain view), or a screen misses
    for code in range(256):
        if not bytes([code]).isalnum():
            assert not bytes([READING[code]]).isalnum(), chr(code)
    assert bytes(range(65, 91)).translate(READING) == bytes(range(97, 123))
    assert b"k1ll K!LL 4@ 5$".translate(READING) == b"k!ll k!ll @@ $$"


def test_the_coarse_reading_is_reading_with_every_pure_break_a_space():
    # COARSE must be READING with more bytes merged (so coarse patterns only widen):
    # letters, digits and the leet symbols as READING reads them, every other byte a
    # space, which READING reads as a break too
    kept = set(b"abcdefghijklmnopqrstuvwxyz0123456789!@$+")
    for code in range(256):
        assert COARSE[code] == (READING[code] if READING[code] in kept else 0x20), code
    assert "\u00e9 k1ll,\tyou".encode().translate(COARSE) == b"   k!ll  you"


def test_coarse_patterns_read_breaks_as_a_few_bytes_and_refuse_foreign_ones():
    pattern = coarse(render(expression("kill you", True, True), repeats=False))
    assert pattern.startswith("[\\x20-\\x21\\x24\\x2b\\x40]")
    assert "\\x7b" not in pattern and "\\xff" not in pattern
    with pytest.raises(ValueError):
        coarse("\\xc3[\\xa9]")  # a UTF-8 literal: only trigger patterns have them


# Text built from pieces of terms and every kind of disguise the normaliser undoes.
_PIECES = st.sampled_from(
    [
        "ass",
        "a",
        "s",
        "k",
        "y",
        "kys",
        "kill",
        "yourself",
        "you",
        "suck",
        "crap",
        "scam",
        "phobe",
        "bit",
        "ly",
        "send",
        "1",
        "btc",
        "1488",
        "free",
        "viagra",
        "v1agra",
        "0",
        "shoot",
        "up",
        "the",
        "school",
        "minor",
        "he said",
        "lollipop",
        "devil",
        "hills",
        "@",
        "$",
        "!",
        "|",
        "+",
        "4",
        "5",
        "3",
        "7",
        "8",
        "9",
        "6",
        " ",
        "  ",
        ".",
        "-",
        "*",
        "_",
        ",",
        "/",
        "~",
        ":",
        ";",
        "\n",
        "'",
        '"',
        "\u200b",
        "\u200d",
        "\u00ad",
        "\u0301",
        "\ufe0f",
        "\u202e",
        "\u202c",
        "\x00",
        "é",
        "ä",
        "ß",
        "ſ",
        "о",
        "а",
        "у",
        "ѕ",
        "і",
        "ｋ",
        "ｙ",
        "ｓ",
        "𝐤",
        "ⓨ",
        "ꜱ",
        "…",
        "\u00a0",
        "KYS",
        "Ass",
        "YOU",
        "我",
        "🔪",
        "ss",
        "sss",
        "uuu",
        "lll",
        "SsS",
        "5$s",
        "$$$",
        "000",
        "1l1",
        "!!!",
        "xxx",
        "Uu",
        "syk",
        "flesruoy",
        "llik",
        "uoy",
        "kcus",
        "\u202e",
        "\u202e",
        "\u2069",
    ]
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_never_clears_generated_text_the_full_path_fires_on(engines, text):
    for engine, full in engines:
        if full.match(text).matches:
            assert engine._prescreen.could_fire(text), text


@pytest.mark.parametrize("text", ["x1000", "x1000 y", "fo0ool", "fooo0l", "f0oool", "FOOol"])
def test_repeats_mixed_with_leet_go_down_the_full_path(text):
    # "x1000" reads "xiooo", squeezed "xio"; the "000" touches the letter only through
    # the leet "1" (a version missed that). Leet among a run ("fo0ool") needs the
    # database whose letters may repeat: squeezing raw bytes cannot stand for it.
    engine = RulesEngine(
        parse_policy("rules:\n  - {id: w, action: block, words: [xio, fol]}\n", "runs.yaml")
    )
    assert unscreened(engine).match(text).matches, text
    assert engine._prescreen.could_fire(text)
