"""The canonical views again, keeping for each character the index it came from.

Run only on texts a rule could match, to report spans in the original text. The steps
are those of ``worker._normalise_views``, with its own patterns and step functions;
where a step takes characters out, its replacement marks each one with a NUL, which
``_Tracked.drop`` removes together with its origin. Bulk work stays C-level too: the
ASCII fold is one translate, the origin of unchanged stretches is a slice, and only the
characters that fold to other than one character are mapped piece by piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress

from worker._normalise_fold import (
    ASCII_CHAR,
    ASCII_FOLD,
    ASCII_KEPT,
    SEPARATOR_CHARS,
    fold,
    fold_bytes,
)
from worker._normalise_views import (
    LEET_RUN,
    LONG_RUN,
    RLO_SEGMENT,
    SPACED_HINT,
    SPACED_LETTERS,
    WORD_BYTE,
    ambiguous,
    has_long_run,
    leet,
    leet_l,
    unreversed,
    words,
)


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
        covered = self.origin[start:end]
        return (min(covered), max(covered) + 1)


@dataclass(frozen=True, slots=True)
class _Tracked:
    """A string whose characters each remember their index in the original text."""

    chars: str
    origin: tuple[int, ...]

    def drop(self, pattern: re.Pattern[str], mark: Callable[[re.Match[str]], str]) -> _Tracked:
        """``pattern.sub(mark, chars)`` with the NULs ``mark`` puts in place of characters
        (one for one) taken out: those characters are dropped, the rest keep their origin.
        NUL never occurs in folded text (control characters are dropped)."""
        marked = pattern.sub(mark, self.chars)
        kept = marked.encode("ascii", "replace")  # one byte a character, 0 for NUL only
        return _Tracked(marked.replace("\x00", ""), tuple(compress(self.origin, kept)))


# The joining and squeezing steps of the views, with a NUL for each character they take out.
_NUL_SEPARATORS = str.maketrans(dict.fromkeys(SEPARATOR_CHARS, "\x00"))


def _unspace_marked(match: re.Match[str]) -> str:
    return match.group().translate(_NUL_SEPARATORS)


def _squeeze_marked(keep: int) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) * keep + "\x00" * (len(match.group()) - keep)


_SQUEEZES_MARKED = (_squeeze_marked(1), _squeeze_marked(2))

# Positions 0, 1, 2, ... made once: slicing this tuple costs a copy of pointers, where
# range() would make a new int object for each index above 256 of every text.
_INDICES = tuple(range(8192))


def _indices(length: int) -> tuple[int, ...]:
    return _INDICES[:length] if length <= len(_INDICES) else tuple(range(length))


# What the bulk ASCII fold leaves as it is: controls (to drop) and non-ASCII characters.
_UNFOLDED = re.compile(r"[^\x20-\x7e\t\n\r]+")


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """One character folded on its own, as the tracked path folds each one."""
    return ASCII_CHAR[ord(char)] if char < "\x80" else fold(char)


def _fold_tracked(text: str, positions: Sequence[int]) -> _Tracked:
    if text.isascii():  # one bulk translate; only control characters are dropped
        raw = text.encode()
        chars = fold_bytes(raw).decode()
        if len(chars) == len(text):
            return _Tracked(chars, tuple(positions))
        return _Tracked(chars, tuple(compress(positions, raw.translate(ASCII_KEPT))))
    # In UTF-8 only ASCII characters have bytes below 0x80, so the same table folds the
    # ASCII characters of any text in bulk. The rest (controls, non-ASCII) fold one at a
    # time, cached; most fold to one character, and only the runs where some do not
    # (zero-width: none, "…": three) need their origin built piece by piece.
    raw = text.encode("utf-8", "surrogatepass")
    ascii_folded = raw.translate(ASCII_FOLD).decode("utf-8", "surrogatepass")
    uneven: list[tuple[int, list[str]]] = []

    def fold_run(match: re.Match[str]) -> str:
        run = match.group()
        pieces = list(map(_fold_char, run))
        folded = "".join(pieces)
        if len(folded) != len(run) or "" in pieces:
            uneven.append((match.start(), pieces))
        return folded

    chars = _UNFOLDED.sub(fold_run, ascii_folded)
    if not uneven:
        return _Tracked(chars, tuple(positions))
    origin: list[int] = []
    last = 0
    for start, pieces in uneven:
        origin += positions[last:start]
        for index, piece in zip(positions[start : start + len(pieces)], pieces, strict=True):
            origin += [index] * len(piece)
        last = start + len(pieces)
    origin += positions[last:]
    return _Tracked(chars, tuple(origin))


def _leet_tracked(tracked: _Tracked, replace: Callable[[re.Match[str]], str]) -> _Tracked:
    """The leet step keeps each character where it is: ``leet`` and ``leet_l`` map one
    character to one letter and only translate (part of) a run, so every replacement
    has the length of what it replaces and the origin stays as it is."""
    return _Tracked(LEET_RUN.sub(replace, tracked.chars), tracked.origin)


def _words_tracked(tracked: _Tracked, length: int) -> Canonical:
    """Words between single spaces, each space tracing to the character it replaces."""
    text = words(tracked.chars)
    if text == "  ":
        return Canonical(text, (0, length), length)
    raw = tracked.chars.encode("ascii", "replace")  # one byte a character, as in words()
    # Kept: each word character and the one after it (the space after the word; a
    # sentinel at the end stands for the end of the text), computed on all characters at
    # once as "is a word byte, or follows one" with the bytes read as one big integer.
    word = int.from_bytes(raw.translate(WORD_BYTE) + b"\x00", "big")
    kept = (word | word >> 8).to_bytes(len(raw) + 1, "big")
    origin = (0, *compress((*tracked.origin, length), kept))
    return Canonical(text, origin, length)


def _core_views_tracked(text: str, positions: Sequence[int], length: int) -> list[Canonical]:
    """The views of ``_normalise_views._core_views``, with offsets."""
    folded = _fold_tracked(text, positions)
    variants = [folded]
    if SPACED_HINT.search(folded.chars) is not None:
        unspaced = folded.drop(SPACED_LETTERS, _unspace_marked)
        if unspaced.chars != folded.chars:
            variants.append(unspaced)
    plain: list[Canonical] = []
    for variant in variants:
        plain.append(_words_tracked(_leet_tracked(variant, leet), length))
        if ambiguous(variant.chars):
            plain.append(_words_tracked(_leet_tracked(variant, leet_l), length))
    squeezed: list[Canonical] = []
    for view in plain:
        if has_long_run(view.text):
            tracked = _Tracked(view.text, view.origin)
            for squeeze in _SQUEEZES_MARKED:
                squeezed_view = tracked.drop(LONG_RUN, squeeze)
                squeezed.append(Canonical(squeezed_view.chars, squeezed_view.origin, length))
    return plain + squeezed


def views_with_offsets(text: str) -> list[Canonical]:
    """Same strings as ``views`` but slower, keeping where each character came from."""
    out = _core_views_tracked(text, _indices(len(text)), len(text))
    if "\u202e" in text:
        positions = list(_indices(len(text)))
        for match in RLO_SEGMENT.finditer(text):
            start, end = match.span(1)
            positions[start:end] = positions[start:end][::-1]
        out += _core_views_tracked(unreversed(text), positions, len(text))
    seen: dict[str, Canonical] = {}
    for view in out:
        seen.setdefault(view.text, view)
    return list(seen.values())
