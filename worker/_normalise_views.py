"""The canonical views, fast: C-level str methods, run on every message the rules see.

After the per-character fold (``worker._normalise_fold``), a view is built in three
steps, each a regex substitution or a translate: leet characters inside words read as
letters ("k1ll"), spaced-out single letters joined ("k.y.s", in a second variant), and
everything but a-z and 0-9 a break between words. Ambiguous leet ("1" as i or l), long
repeats ("fuuuck") and right-to-left overrides add variants only where they occur, so
ordinary text costs one view. ``worker._normalise_offsets`` repeats the same steps with
the same patterns and step functions, imported from here, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

import ahocorasick

from worker._normalise_fold import LEET_READINGS, SEPARATOR_CHARS, fold

_LEET = str.maketrans({k: v[0] for k, v in LEET_READINGS.items()})
_LEET_L = str.maketrans({k: v[-1] for k, v in LEET_READINGS.items()})
# Leet characters touching a letter are read as letters ("k1ll", "@ss", "wr!$t$"), so
# numbers ("2024", "$5") stay as they are; a trailing "!" ("you!!") stays punctuation.
LEET_RUN = re.compile(r"[0-9@$!|+]+")  # a class first: re scans for it at C speed
AMBIGUOUS = re.compile(r"[1!|]+[a-z]")  # "k1ll", "|ick"
# Three or more single letter-like characters split by separators: "k y s", "f.u.c.k",
# "k-i-l-l", "5.h.0.0.t", "s|h/o*o.t".
_LETTERISH = r"[a-z0-9@$!+]"
_SEP = "[" + re.escape(SEPARATOR_CHARS) + "]"
# A cheap pre-check that SPACED_LETTERS needs: its second letter between separators,
# then the next, which no letter follows. No separator is asked for after that one, so
# that "🔪k y s" at the end of a text is still found.
SPACED_HINT = re.compile(f"{_SEP}{_LETTERISH}{_SEP}+{_LETTERISH}(?![a-z0-9@$!+])")
SPACED_LETTERS = re.compile(
    f"(?<![a-z0-9@$!+]){_LETTERISH}(?:{_SEP}+{_LETTERISH}(?![a-z0-9@$!+])){{2,}}"
)
_SEPARATORS = re.compile(f"{_SEP}+")
LONG_RUN = re.compile(r"([a-z])\1{2,}")
# Right-to-left override ... pop: the text between is shown reversed, so read it reversed.
RLO_SEGMENT = re.compile("\u202e([^\u202c\u2069\n]*)")
# Final step: anything but a-z and 0-9 becomes a space.
_ASCII_WORDS = bytes(c if (97 <= c <= 122 or 48 <= c <= 57) else 32 for c in range(256))
WORD_BYTE = bytes(1 if (97 <= c <= 122 or 48 <= c <= 57) else 0 for c in range(256))
# Every run of three identical letters; the rules engine adds these to its automaton so
# one pass both matches the policy and tells whether squeezed views are needed.
LONG_RUN_SEEDS = tuple(letter * 3 for letter in "abcdefghijklmnopqrstuvwxyz")


@lru_cache(maxsize=1)
def triples() -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        automaton.add_word(letter * 3, letter)
    automaton.make_automaton()
    return automaton


def has_long_run(view: str) -> bool:
    return next(triples().iter(view), None) is not None


def words(folded: str) -> str:
    """Words (runs of a-z and 0-9) between single spaces, padded; every other character,
    non-ASCII ones included (one "?" each once encoded), is a break."""
    found = folded.encode("ascii", "replace").translate(_ASCII_WORDS).split()
    return " " + b" ".join(found).decode() + " "


def _leet_with(table: dict[int, str]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        run, text, end = match.group(), match.string, match.end()
        if end < len(text) and "a" <= text[end] <= "z":
            return run.translate(table)  # before a letter: all of it ("k1ll", "@ss")
        start = match.start()
        if start and "a" <= text[start - 1] <= "z":
            # after a letter: up to a "!" ("wr!$t$" -> "wrists", but "you!!" stays)
            head = next((i for i, c in enumerate(run) if c == "!"), len(run))
            return run[:head].translate(table) + run[head:]
        return run

    return replace


# The two readings of leet runs: one character for one, so the offsets path can keep
# every character's origin as it is.
leet = _leet_with(_LEET)
leet_l = _leet_with(_LEET_L)


def _unspace(match: re.Match[str]) -> str:
    return _SEPARATORS.sub("", match.group())


def _squeeze_to(keep: int) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) * keep


_SQUEEZES = (_squeeze_to(1), _squeeze_to(2))


def squeezes(view: str) -> list[str]:
    """Variants of a view with long repeats cut to one and to two letters ("fuuuck")."""
    return [LONG_RUN.sub(squeeze, view) for squeeze in _SQUEEZES]


def unspaced(folded: str) -> str | None:
    """``folded`` (see ``fold``) with spaced-out letters joined ("k y s" -> "kys"), as
    the canonical views join them; None when it has none."""
    if SPACED_HINT.search(folded) is None:
        return None
    joined = SPACED_LETTERS.sub(_unspace, folded)
    return joined if joined != folded else None


def _core_views(text: str, squeeze: bool = True) -> list[str]:
    folded = fold(text)
    variants = [folded]
    joined = unspaced(folded)
    if joined is not None:
        variants.append(joined)
    out: list[str] = []
    for variant in variants:
        out.append(words(LEET_RUN.sub(leet, variant)))
        if ambiguous(variant):
            out.append(words(LEET_RUN.sub(leet_l, variant)))
    if squeeze:
        for view in out[:]:
            if has_long_run(view):
                out.extend(squeezes(view))
    return _unique(out)


def ambiguous(folded: str) -> bool:
    """Whether ``folded`` has ambiguous leet ("k1ll": "kill" or "klll"), so a second
    reading. re scans for a leading class at ~20 ns a character, so first ask whether
    any of its characters occurs at all, which ``in`` answers at memory speed."""
    return ("1" in folded or "!" in folded or "|" in folded) and (
        AMBIGUOUS.search(folded) is not None
    )


def _unique(found: list[str]) -> list[str]:
    return list(dict.fromkeys(found))


def unreversed(text: str) -> str:
    """``text`` with each right-to-left overridden segment reversed, as it is shown."""
    return RLO_SEGMENT.sub(lambda m: "\u202e" + m.group(1)[::-1], text)


def views(text: str, squeeze: bool = True) -> list[str]:
    """Canonical forms of ``text``: the plain one first, then any evasion-undoing variants.

    Variants exist only when the text has spaced-out letters ("k y s"), ambiguous leet
    ("k!ll"), long repeats ("fuuuck") or right-to-left overrides, so ordinary text costs
    one view.
    """
    out = _core_views(text, squeeze)
    if "\u202e" in text:
        out = _unique(out + _core_views(unreversed(text), squeeze))
    return out


def canonical(text: str) -> str:
    """The plain canonical form (see ``worker.normalise``)."""
    return _core_views(text)[0]
