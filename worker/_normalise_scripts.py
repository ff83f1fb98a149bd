"""The script view: text in its own letters, for rules written in scripts other than Latin.

The canonical views (``worker._normalise_views``) keep only a-z and 0-9: right for Latin
text and for the homoglyph tricks played with other scripts, but a rule written in
Cyrillic, Arabic, Devanagari or Chinese would never match there. Such terms match this
view instead: NFKC, case-folded, invisible format characters dropped, everything but
letters, marks and digits a break between words. Chinese, Japanese, Thai, Lao, Khmer, Myanmar
and Tibetan put no spaces between words, so a term in those scripts matches anywhere,
not as a whole word, and spaces between two of their characters ("杀 了 你") are taken
out. Built per character in Python, so only for non-ASCII text, and only when the
policy has such terms.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from worker._normalise_offsets import Canonical

# Scripts written without spaces between words (code point blocks).
_SPACELESS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def spaceless(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _SPACELESS)


def native(term: str) -> bool:
    """Whether ``term`` has a letter outside the Latin script (it matches this view)."""
    return any(c.isalpha() and not _latin(c) for c in term)


@lru_cache(maxsize=4096)
def _latin(char: str) -> bool:
    return ord(char) < 0x250 or unicodedata.name(char, "").startswith("LATIN")


def native_pattern(term: str) -> str:
    """The automaton pattern of a native ``term``: whole words, or anywhere for a term
    all in scripts without spaces."""
    body = script_view(term).text.strip()
    if not body:
        return ""
    if all(spaceless(c) for c in body if c != " "):
        return body
    return f" {body} "


def script_view(text: str) -> Canonical:
    """``text`` as described above, with the original index of each character."""
    chars: list[str] = [" "]
    origin: list[int] = [0]
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKC", char).casefold():
            category = unicodedata.category(piece)
            if category == "Cf":
                continue
            if not (piece.isalnum() or category[0] == "M"):  # marks: Devanagari vowels
                piece = " "
                if chars[-1] == " ":
                    continue
            elif chars[-1] == " " and len(chars) > 2 and spaceless(chars[-2]) and spaceless(piece):
                chars.pop()  # "杀 了" reads "杀了"
                origin.pop()
            chars.append(piece)
            origin.append(index)
    if chars[-1] != " ":
        chars.append(" ")
        origin.append(len(text))
    return Canonical("".join(chars), tuple(origin), len(text))
