"""Stage 2: text -> the canonical form rules match against, with offsets back to the original.

The canonical form is lower-case Latin letters, digits and single spaces, padded with one
space at each end so that a pattern " kill you " matches whole words only. Evasions are
undone on the way: compatibility forms (fullwidth, mathematical letters), homoglyphs from
other scripts (UTS #39 confusables), combining marks, zero-width and bidi controls,
leetspeak inside words ("k1ll"), separators between single letters ("k.y.s") and long
repeats ("fuuuuck", in a second view).

Two implementations produce the same strings: ``views`` is fast (C-level str methods,
run on every message) and ``views_with_offsets`` keeps a per-character map to the
original text (run only on texts a rule could match, to report spans; C-level too, bar
the characters that fold to other than one). A test holds them equal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress

import ahocorasick

# Every letter a leet character may stand for; "1", "!" and "|" stand for i or l, so
# where they occur a second view reads them as "l".
LEET_READINGS = {
    "0": "o",
    "1": "il",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "il",
    "|": "l",
    "+": "t",
    "8": "b",
}
_LEET = str.maketrans({k: v[0] for k, v in LEET_READINGS.items()})
_LEET_L = str.maketrans({k: v[-1] for k, v in LEET_READINGS.items()})
# Leet characters touching a letter are read as letters ("k1ll", "@ss", "wr!$t$"), so
# numbers ("2024", "$5") stay as they are; a trailing "!" ("you!!") stays punctuation.
_LEET_RUN = re.compile(r"[0-9@$!|+]+")  # a class first: re scans for it at C speed
_AMBIGUOUS = re.compile(r"[1!|]+[a-z]")  # "k1ll", "|ick": a rare class first, so fast
# Three or more single letter-like characters split by separators: "k y s", "f.u.c.k",
# "k-i-l-l", "5.h.0.0.t", "s|h/o*o.t".
_LETTERISH = r"[a-z0-9@$!+]"
# What may split single letters: "k y s", "f.u.c.k", "(k)(y)(s)", one letter a line
# (and emoji and other symbols, which the per-character fold reads as spaces).
SEPARATOR_CHARS = " .-*,/~:;|\t\n\r()[]{}<>=#"
_SEP = "[" + re.escape(SEPARATOR_CHARS) + "]"
# A cheap pre-check that _SPACED_LETTERS needs: its second letter between separators,
# then the next, which no letter follows. (It once also asked for a separator after
# that one, and so missed "🔪k y s" at the end of a text.)
_SPACED_HINT = re.compile(f"{_SEP}{_LETTERISH}{_SEP}+{_LETTERISH}(?![a-z0-9@$!+])")
_SPACED_LETTERS = re.compile(
    f"(?<![a-z0-9@$!+]){_LETTERISH}(?:{_SEP}+{_LETTERISH}(?![a-z0-9@$!+])){{2,}}"
)
_SEPARATORS = re.compile(f"{_SEP}+")
# Characters the non-ASCII path must look up: anything outside printable ASCII, and "_".
_SPECIAL = re.compile(r"[^\x20-\x5e\x60-\x7e\t\n\r]")
_LONG_RUN = re.compile(r"([a-z])\1{2,}")
# Right-to-left override ... pop: the text between is shown reversed, so read it reversed.
_RLO_SEGMENT = re.compile("\u202e([^\u202c\u2069\n]*)")
_DROPPED = frozenset(("Mn", "Me", "Cf", "Cc"))
# ASCII fast path: lower case, "_" read as a space, control characters dropped.
_ASCII_FOLD = bytes((c + 32 if 65 <= c <= 90 else 32 if c == 95 else c) for c in range(256))
_ASCII_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"
_ASCII_KEPT = bytes(0 if c in _ASCII_CONTROLS else 1 for c in range(256))  # compress() mask
# Final step: anything but a-z and 0-9 becomes a space.
_ASCII_WORDS = bytes(c if (97 <= c <= 122 or 48 <= c <= 57) else 32 for c in range(256))
_WORD_BYTE = bytes(1 if (97 <= c <= 122 or 48 <= c <= 57) else 0 for c in range(256))
# Look-alikes that UTS #39 data leaves out or maps to another letter than readers see.
_EXTRA_LOOKALIKES = {
    **dict(zip("αβγδεζηθικλμνξοπρσςτυφχψω", "abydeznoiklmvxonpoctuoxyw", strict=True)),
    **dict(
        zip(
            "абвгдежзийклмнопрстуфхцчшщъыьэюяіјѕԁһӏԝ",
            "abbrdex3uuknmhonpctyoxuywwbbbeorijsdhlw",
            strict=True,
        )
    ),
    **dict(zip("ոսհցօ", "nuhgo", strict=True)),
    # Latin letters NFKD keeps whole (a stroke, a ligature): read as their base letters,
    # as search engines fold them ("kill yøurself", "Søren" -> "soren")
    **{
        k: v
        for lower, v in {
            "ø": "o",
            "æ": "ae",
            "œ": "oe",
            "ł": "l",
            "đ": "d",
            "ħ": "h",
            "ŧ": "t",
            "þ": "th",
            "ð": "d",
        }.items()
        for k in (lower, lower.upper())
    },
}


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
        char = chr(code)
        if unicodedata.category(char) in _DROPPED and code not in (0x09, 0x0A, 0x0D):
            table[code] = None
        elif code > 0x7F and code not in table:
            name = unicodedata.name(char, "")
            # small capitals ("ᴋ"), and the letters flags are made of ("🇰🇾🇸")
            letter = re.fullmatch(
                r"(?:LATIN LETTER SMALL CAPITAL|REGIONAL INDICATOR SYMBOL LETTER) ([A-Z])", name
            )
            if letter:
                table[code] = letter.group(1).lower()
            elif unicodedata.category(char) == "So":
                # emoji and other symbols: a word break, as before, and a separator
                # between spaced-out letters ("k🙂y🙂s")
                table[code] = " "
    table.update({ord(k): v for k, v in _EXTRA_LOOKALIKES.items()})
    return table


def warm_up() -> None:
    """Build the lookup table now (about a second), not inside the first message."""
    _TABLE.update(_char_table())
    _triples()


_TABLE: dict[int, str | None] = {}


def _fold(text: str) -> str:
    """The per-character part: NFKD, casefold, drop marks and invisibles, homoglyphs."""
    if text.isascii():
        return fold_bytes(text.encode()).decode()
    if not _TABLE:
        warm_up()
    return _SPECIAL.sub(_map_char, unicodedata.normalize("NFKD", text).casefold())


def fold_bytes(data: bytes) -> bytes:
    """The per-character fold of ASCII, on bytes (lower case, "_" a space, control
    characters dropped); every other byte stays as it is."""
    return data.translate(_ASCII_FOLD, _ASCII_CONTROLS)


def unspaced(folded: str) -> str | None:
    """``folded`` (see ``fold``) with spaced-out letters joined ("k y s" -> "kys"), as
    the canonical views join them; None when it has none."""
    if _SPACED_HINT.search(folded) is None:
        return None
    joined = _SPACED_LETTERS.sub(_unspace, folded)
    return joined if joined != folded else None


def fold(text: str) -> str:
    """The per-character part of normalisation alone (see ``_fold``)."""
    return _fold(text)


# The ASCII fold one character at a time, for the slow path.
_ASCII_CHAR = [bytes([c]).translate(_ASCII_FOLD, _ASCII_CONTROLS).decode() for c in range(128)]


def _map_char(match: re.Match[str]) -> str:
    char = match.group()
    return _TABLE.get(ord(char), char) or ""


@lru_cache(maxsize=1)
def _triples() -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        automaton.add_word(letter * 3, letter)
    automaton.make_automaton()
    return automaton


def _has_long_run(view: str) -> bool:
    return next(_triples().iter(view), None) is not None


def _words(folded: str) -> str:
    """Words (runs of a-z and 0-9) between single spaces, padded; every other character,
    non-ASCII ones included (one "?" each once encoded), is a break."""
    words = folded.encode("ascii", "replace").translate(_ASCII_WORDS).split()
    return " " + b" ".join(words).decode() + " "


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


_leet = _leet_with(_LEET)
_leet_l = _leet_with(_LEET_L)


def _unspace(match: re.Match[str]) -> str:
    return _SEPARATORS.sub("", match.group())


def _squeeze_to(keep: int) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) * keep


_SQUEEZES = (_squeeze_to(1), _squeeze_to(2))
# The same two steps for the tracked path (``_Tracked.drop``): a NUL for each character
# they take out.
_NUL_SEPARATORS = str.maketrans(dict.fromkeys(SEPARATOR_CHARS, "\x00"))


def _unspace_marked(match: re.Match[str]) -> str:
    return match.group().translate(_NUL_SEPARATORS)


def _squeeze_marked(keep: int) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) * keep + "\x00" * (len(match.group()) - keep)


_SQUEEZES_MARKED = (_squeeze_marked(1), _squeeze_marked(2))


def squeezes(view: str) -> list[str]:
    """Variants of a view with long repeats cut to one and to two letters ("fuuuck")."""
    return [_LONG_RUN.sub(squeeze, view) for squeeze in _SQUEEZES]


# Every run of three identical letters; the rules engine adds these to its automaton so
# one pass both matches the policy and tells whether squeezed views are needed.
LONG_RUN_SEEDS = tuple(letter * 3 for letter in "abcdefghijklmnopqrstuvwxyz")


# -- the fast path -------------------------------------------------------------------------


def _core_views(text: str, squeeze: bool = True) -> list[str]:
    folded = _fold(text)
    variants = [folded]
    joined = unspaced(folded)
    if joined is not None:
        variants.append(joined)
    out: list[str] = []
    for variant in variants:
        out.append(_words(_LEET_RUN.sub(_leet, variant)))
        if _AMBIGUOUS.search(variant) is not None:
            out.append(_words(_LEET_RUN.sub(_leet_l, variant)))
    if squeeze:
        for view in out[:]:
            if _has_long_run(view):
                out.extend(squeezes(view))
    return _unique(out)


def _unique(views: list[str]) -> list[str]:
    return list(dict.fromkeys(views))


def _unreversed(text: str) -> str:
    return _RLO_SEGMENT.sub(lambda m: "\u202e" + m.group(1)[::-1], text)


def views(text: str, squeeze: bool = True) -> list[str]:
    """Canonical forms of ``text``: the plain one first, then any evasion-undoing variants.

    Variants exist only when the text has spaced-out letters ("k y s"), ambiguous leet
    ("k!ll"), long repeats ("fuuuck") or right-to-left overrides, so ordinary text costs
    one view.
    """
    out = _core_views(text, squeeze)
    if "\u202e" in text:
        out = _unique(out + _core_views(_unreversed(text), squeeze))
    return out


def canonical(text: str) -> str:
    """The plain canonical form (see module docstring)."""
    return _core_views(text)[0]


def cache_form(text: str) -> str:
    """The text as the score cache keys it: NFKC, case-folded, whitespace collapsed.

    Lossless for meaning, unlike ``canonical``, which keeps only Latin letters and
    digits: two Chinese sentences (or a threat and a greeting in Cyrillic) must not
    share cached scores. Cheap: C-level string methods only.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# -- the slow path, with offsets -----------------------------------------------------------


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
    return _ASCII_CHAR[ord(char)] if char < "\x80" else _fold(char)


def _fold_tracked(text: str, positions: Sequence[int]) -> _Tracked:
    if text.isascii():  # one bulk translate; only control characters are dropped
        raw = text.encode()
        chars = fold_bytes(raw).decode()
        if len(chars) == len(text):
            return _Tracked(chars, tuple(positions))
        return _Tracked(chars, tuple(compress(positions, raw.translate(_ASCII_KEPT))))
    # In UTF-8 only ASCII characters have bytes below 0x80, so the same table folds the
    # ASCII characters of any text in bulk. The rest (controls, non-ASCII) fold one at a
    # time, cached; most fold to one character, and only the runs where some do not
    # (zero-width: none, "…": three) need their origin built piece by piece.
    raw = text.encode("utf-8", "surrogatepass")
    ascii_folded = raw.translate(_ASCII_FOLD).decode("utf-8", "surrogatepass")
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
    """The leet step keeps each character where it is: ``_LEET`` and ``_LEET_L`` map one
    character to one letter and ``_leet_with`` only translates (part of) a run, so every
    replacement has the length of what it replaces and the origin stays as it is."""
    return _Tracked(_LEET_RUN.sub(replace, tracked.chars), tracked.origin)


def _words_tracked(tracked: _Tracked, length: int) -> Canonical:
    """Words between single spaces, each space tracing to the character it replaces."""
    text = _words(tracked.chars)
    if text == "  ":
        return Canonical(text, (0, length), length)
    raw = tracked.chars.encode("ascii", "replace")  # one byte a character, as in _words
    # Kept: each word character and the one after it (the space after the word; a
    # sentinel at the end stands for the end of the text), computed on all characters at
    # once as "is a word byte, or follows one" with the bytes read as one big integer.
    word = int.from_bytes(raw.translate(_WORD_BYTE) + b"\x00", "big")
    kept = (word | word >> 8).to_bytes(len(raw) + 1, "big")
    origin = (0, *compress((*tracked.origin, length), kept))
    return Canonical(text, origin, length)


def _core_views_tracked(text: str, positions: Sequence[int], length: int) -> list[Canonical]:
    """The views of ``_core_views``, with offsets."""
    folded = _fold_tracked(text, positions)
    variants = [folded]
    if _SPACED_HINT.search(folded.chars) is not None:
        unspaced = folded.drop(_SPACED_LETTERS, _unspace_marked)
        if unspaced.chars != folded.chars:
            variants.append(unspaced)
    plain: list[Canonical] = []
    for variant in variants:
        plain.append(_words_tracked(_leet_tracked(variant, _leet), length))
        if _AMBIGUOUS.search(variant.chars) is not None:
            plain.append(_words_tracked(_leet_tracked(variant, _leet_l), length))
    squeezed: list[Canonical] = []
    for view in plain:
        if _has_long_run(view.text):
            tracked = _Tracked(view.text, view.origin)
            for squeeze in _SQUEEZES_MARKED:
                squeezed_view = tracked.drop(_LONG_RUN, squeeze)
                squeezed.append(Canonical(squeezed_view.chars, squeezed_view.origin, length))
    return plain + squeezed


def views_with_offsets(text: str) -> list[Canonical]:
    """Same strings as ``views`` but slow, keeping where each character came from."""
    out = _core_views_tracked(text, _indices(len(text)), len(text))
    if "\u202e" in text:
        positions = list(_indices(len(text)))
        for match in _RLO_SEGMENT.finditer(text):
            start, end = match.span(1)
            positions[start:end] = positions[start:end][::-1]
        out += _core_views_tracked(_unreversed(text), positions, len(text))
    seen: dict[str, Canonical] = {}
    for view in out:
        seen.setdefault(view.text, view)
    return list(seen.values())
