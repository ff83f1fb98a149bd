from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.normalise import canonical, views, views_with_offsets

from ..conftest import DATASET


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I will K1LL you!!", " i will kill you "),
        ("f\u200bu\u200cc\u2060k", " fuck "),
        ("fսck", " fuck "),  # Armenian letter
        ("𝐤𝐢𝐥𝐥 ＹＯＵ", " kill you "),  # mathematical bold, fullwidth
        ("k̷i̷l̷l̷", " kill "),  # combining overlays
        ("snake_case", " snake case "),
        ("$5 in 2024", " 5 in 2024 "),  # numbers are not leet
        ("@ss", " ass "),
        ("", "  "),
    ],
)
def test_canonical(text: str, expected: str):
    assert canonical(text) == expected


def test_variants_only_when_there_is_something_to_undo():
    assert views("a normal sentence") == [" a normal sentence "]
    assert views("k y s") == [" k y s ", " kys "]
    # after a symbol or a letter of another script, at the end of the text or not
    for text in ("🔪k y s", "我k.y.s", "我k-y-s我", "🔪 k y s", "(k y s)"):
        assert " kys " in views(text), text
        assert " kys " in [v.text for v in views_with_offsets(text)], text
    assert views("a big cat") == [" a big cat "]  # one single letter is not spaced-out
    assert views("f🤬u🤬c🤬k you") == [" f u c k you ", " fuck you "]  # emoji separate too
    assert views("I ❤️ NY") == [" i ny "]
    assert views("🇰🇾🇸, from 🇺🇸") == [" kys from us "]  # flags are letter pairs
    assert views("fuuuuck") == [" fuuuuck ", " fuck ", " fuuck "]
    assert views("\u202ellik\u202c you") == [" llik you ", " kill you "]  # shown reversed


def test_latin_letters_nfkd_keeps_whole_read_as_their_base_letters():
    assert views("kill yøurself") == [" kill yourself "]
    assert views("Søren Kierkegaard, Łódź, Ærø, straße") == [
        " soren kierkegaard lodz aero strasse "
    ]


def test_spans_point_into_the_original_text():
    text = "hey, K\u200bY\u200bS!"
    view = views_with_offsets(text)[0]
    start = view.text.index("kys")
    a, b = view.span(start, start + 3)
    assert text[a:b] == "K\u200bY\u200bS"


def test_fast_and_slow_paths_agree_on_the_dataset():
    with gzip.open(DATASET, "rt") as lines:
        texts = [json.loads(line)["prompt"] for line in lines]
    for text in texts:
        assert views(text) == [v.text for v in views_with_offsets(text)]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fast_and_slow_paths_agree_on_any_text(text: str):
    assert views(text) == [v.text for v in views_with_offsets(text)]


def test_the_script_view_keeps_other_scripts_and_joins_spaceless_ones():
    from worker._normalise_scripts import native, native_pattern, script_view

    assert script_view("我要杀 了 你!").text == " 我要杀了你 "  # no spaces in Chinese
    assert script_view("Я тебя\u200b УБЬЮ").text == " я тебя убью "  # case, zero-width
    assert script_view("कुत्ते, तुम").text == " कुत्ते तुम "  # vowel signs are letters
    view = script_view("ok: 杀 了 你")
    start = view.text.index("杀")
    assert view.span(start, start + 3) == (4, 9)  # back to the original characters
    assert native("убью") and native("杀") and not native("kill") and not native("café")
    assert native_pattern("杀了你") == "杀了你"  # anywhere
    assert native_pattern("убью тебя") == " убью тебя "  # whole words
