"""Stage 2: text -> the canonical form rules match against, with offsets back to the original.

The canonical form is lower-case Latin letters, digits and single spaces, padded with one
space at each end so that a pattern " kill you " matches whole words only. Evasions are
undone on the way: compatibility forms (fullwidth, mathematical letters), homoglyphs from
other scripts (UTS #39 confusables), combining marks, zero-width and bidi controls,
leetspeak inside words ("k1ll"), separators between single letters ("k.y.s") and long
repeats ("fuuuuck", in a second view).

Two implementations produce the same strings: ``views`` is fast (C-level str methods,
run on every message) and ``views_with_offsets`` keeps a per-character map to the
original text (run only when a rule matched, to report spans). A test holds them equal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                       "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "8": "b"})
# A run of leet characters directly before a letter is read as letters ("k1ll", "@ss",
# "sh!t"), so numbers ("2024", "$5") and trailing punctuation ("you!!") stay as they are.
_LEET_RUN = re.compile(r"[0-9@$!|+]+(?=[a-z])")
# Three or more single letters split by separators: "k y s", "f.u.c.k", "k-i-l-l".
_SPACED_HINT = re.compile(r"[a-z][ .\-*,/~:;][a-z][ .\-*,/~:;][a-z]")
_SPACED_LETTERS = re.compile(r"\b[a-z](?:[ .\-*,/~:;]+[a-z]\b){2,}")
_SEPARATORS = re.compile(r"[ .\-*,/~:;]+")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
# Characters the non-ASCII path must look up: anything outside printable ASCII, and "_".
_SPECIAL = re.compile(r"[^\x20-\x5e\x60-\x7e\t\n\r]")
_LONG_RUN = re.compile(r"([a-z])\1{2,}")
_DROPPED = frozenset(("Mn", "Me", "Cf", "Cc"))
# ASCII fast path: lower case, "_" read as a space, control characters dropped.
_ASCII_FOLD = bytes(
    (c + 32 if 65 <= c <= 90 else 32 if c == 95 else c) for c in range(256)
)
_ASCII_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"
# Final step: anything but a-z and 0-9 becomes a space.
_ASCII_WORDS = bytes(c if (97 <= c <= 122 or 48 <= c <= 57) else 32 for c in range(256))


@lru_cache(maxsize=1)
def _char_table() -> dict[int, str | None]:
    """Per-character map: drop invisible characters and marks, fold homoglyphs to Latin."""
    from confusable_homoglyphs import confusables

    table: dict[int, str | None] = {ord("_"): " "}
    for char, glyphs in confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        latin = [g["c"].casefold() for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()]
        letters = [c for c in latin if c.isalpha()]
        if letters:
            table[ord(char)] = letters[0]
    for code in (*range(0x30000), *range(0xE0000, 0xE1000)):
        if unicodedata.category(chr(code)) in _DROPPED and code not in (0x09, 0x0A, 0x0D):
            table[code] = None
    return table


def _fold(text: str) -> str:
    """The per-character part: NFKD, casefold, drop marks and invisibles, homoglyphs."""
    if text.isascii():
        return text.encode().translate(_ASCII_FOLD, _ASCII_CONTROLS).decode()
    return _SPECIAL.sub(_map_char, unicodedata.normalize("NFKD", text).casefold())


def _map_char(match: re.Match[str]) -> str:
    char = match.group()
    return _char_table().get(ord(char), char) or ""


@lru_cache(maxsize=1)
def _triples() -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        automaton.add_word(letter * 3, letter)
    automaton.make_automaton()
    return automaton


def _has_long_run(view: str) -> bool:
    return next(_triples().iter(view), None) is not None


def _leet(match: re.Match[str]) -> str:
    return match.group().translate(_LEET)


def _unspace(match: re.Match[str]) -> str:
    return _SEPARATORS.sub("", match.group())


def _words(folded: str) -> str:
    if folded.isascii():
        words = folded.encode().translate(_ASCII_WORDS).split()
        return " " + b" ".join(words).decode() + " "
    return " " + " ".join(_NOT_WORD.sub(" ", folded).split()) + " "


def _unspaced(folded: str) -> str | None:
    if _SPACED_HINT.search(folded) is None:
        return None
    unspaced = _SPACED_LETTERS.sub(_unspace, folded)
    return unspaced if unspaced != folded else None


def views(text: str) -> list[str]:
    """Canonical forms of ``text``: the plain one first, then any evasion-undoing variants.

    Variants exist only when the text has spaced-out letters ("k y s") or long repeats
    ("fuuuck"), so ordinary text costs one view.
    """
    folded = _LEET_RUN.sub(_leet, _fold(text))
    out = [_words(folded)]
    unspaced = _unspaced(folded)
    if unspaced is not None:
        out.append(_words(unspaced))
    for view in out[:]:
        if _has_long_run(view):
            out.append(_LONG_RUN.sub(r"\1", view))
    return out


def canonical(text: str) -> str:
    """The plain canonical form (see module docstring)."""
    return views(text)[0]


@dataclass(frozen=True, slots=True)
class Canonical:
    """Canonical text plus, for each of its characters, the original index it came from."""

    text: str
    origin: tuple[int, ...]
    source_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) covering canonical [start, end), padding spaces trimmed."""
        while start < end and self.text[start] == " ":
            start += 1
        while end > start and self.text[end - 1] == " ":
            end -= 1
        if start >= end:
            return (0, 0)
        return (self.origin[start], self.origin[end - 1] + 1)


def views_with_offsets(text: str) -> list[Canonical]:
    """Same strings as ``views`` but slow, keeping where each character came from."""
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for out in _fold(char):
            chars.append(out)
            origin.append(index)
    folded = "".join(chars)
    for match in _LEET_RUN.finditer(folded):
        for i in range(match.start(), match.end()):
            chars[i] = chars[i].translate(_LEET)
    folded = "".join(chars)
    out = [_to_words(chars, origin, [True] * len(chars), len(text))]
    keep = [True] * len(chars)
    for match in _SPACED_LETTERS.finditer(folded) if _SPACED_HINT.search(folded) else ():
        for sep in _SEPARATORS.finditer(folded, match.start(), match.end()):
            for i in range(sep.start(), sep.end()):
                keep[i] = False
    if not all(keep):
        out.append(_to_words(chars, origin, keep, len(text)))
    for view in out[:]:
        squeezed = _squeeze(view)
        if squeezed is not None:
            out.append(squeezed)
    return out


def _to_words(chars: list[str], origin: list[int], keep: list[bool], length: int) -> Canonical:
    out_chars: list[str] = [" "]
    out_origin: list[int] = [0]
    for char, src, kept in zip(chars, origin, keep, strict=True):
        if not kept:
            continue
        if not ("a" <= char <= "z" or "0" <= char <= "9"):
            if out_chars[-1] == " ":
                continue
            char = " "
        out_chars.append(char)
        out_origin.append(src)
    if out_chars[-1] != " " or len(out_chars) == 1:
        out_chars.append(" ")
        out_origin.append(length)
    return Canonical("".join(out_chars), tuple(out_origin), length)


def _squeeze(canon: Canonical) -> Canonical | None:
    runs = list(_LONG_RUN.finditer(canon.text))
    if not runs:
        return None
    keep = [True] * len(canon.text)
    for run in runs:
        for i in range(run.start() + 1, run.end()):
            keep[i] = False
    text = "".join(c for c, k in zip(canon.text, keep, strict=True) if k)
    origin = tuple(o for o, k in zip(canon.origin, keep, strict=True) if k)
    return Canonical(text, origin, canon.source_length)
