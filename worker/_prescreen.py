"""A conservative "could any rule fire?" test on the raw text, before normalisation.

Normalising a message (``worker.normalise``) costs tens of microseconds of Python, and
most messages match no rule at all. So the policy's terms (and its regexes, translated)
are also compiled into a Hyperscan database over the *original* text's UTF-8, read
through ``worker._raw_patterns.coarse_reading`` (lower case, one byte per letter's leet
forms, every other break a space, padded with spaces): each canonical letter becomes a
byte class of its forms, between the same word boundaries canonical text has. One scan
of a few microseconds answers "nothing here" for most messages; only the rest pay for
the normaliser and the automaton, which make the real decision.

Those patterns only stand for text the normaliser changes one character at a time, so
a second, small database (the triggers, read through ``reading``, which keeps non-ASCII
bytes) looks for what they do not model: accented and fullwidth letters, homoglyphs
from other scripts, mathematical and enclosed letters, ligatures, characters that fold
to nothing between letters (zero-width, combining marks), single letters split by
separators ("k.y.s") and three of a letter in a row ("fuuuck"). A text with any of
them gets a second look: read as ASCII (or, for homoglyphs and the like, through the
normaliser's own per-character fold) and scanned again; where that scan finds
spaced-out letters, again with them joined; where it finds a letter three times in a
row, again with such runs squeezed to one and to two letters, as canonical views
squeeze them; and where leet characters are part of a run ("fo0ol"), by a third
database whose letters may repeat. A right-to-left override always takes the full path.

The promise, held by a property test: a text this calls clean fires no rule.

This module scans; ``worker._prescreen_build`` builds the databases and says why the
patterns are plain and the tolerance is in the second look.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from worker._prescreen_build import Database, build_databases, special_characters
from worker._raw_patterns import coarse_reading, reading, utf8
from worker.normalise import fold, fold_bytes, unspaced

__all__ = ["Database", "Prescreen"]

# The frequent characters that fold to nothing (``_prescreen_build._VANISHING``) in
# UTF-8, for text already decomposed (NFKD) and encoded.
_VANISHING_UTF8 = re.compile(
    rb"\xcc[\x80-\xbf]|\xcd[\x80-\xaf]|\xc2\xad|\xe2\x80[\x8b-\x8f]|\xe2\x81[\xa0-\xa4]"
    rb"|\xe3\x82[\x99\x9a]|\xef\xb8[\x80-\x8f]|\xef\xbb\xbf"
)


@lru_cache(maxsize=1)
def _whole_letters() -> tuple[re.Pattern[bytes], dict[bytes, bytes]]:
    whole = special_characters().whole
    return re.compile(b"|".join(map(re.escape, sorted(whole, key=len, reverse=True)))), whole


@lru_cache(maxsize=1)
def _symbols() -> re.Pattern[bytes]:
    return re.compile(utf8(special_characters().symbols).encode())


def _ascii(text: str, symbols: bool = False) -> bytes:
    """What the second look reads: compatibility forms decomposed, the frequent
    characters that fold to nothing dropped, and Latin letters NFKD keeps whole read as
    the normaliser reads them ("ø" as "o"). Every byte of what is left outside ASCII
    reads as a word break, as such characters do in canonical text. Bytes, because a
    byte-level regex finds the few accents in mostly ASCII text several times faster
    than a str one. ``symbols``: emoji and other symbols read as spaces too, which only
    matters where they may split spaced-out letters ("k🙂y🙂s"), so only then is it
    worth a scan for them."""
    data = _VANISHING_UTF8.sub(b"", unicodedata.normalize("NFKD", text).encode())
    if symbols:
        data = _symbols().sub(b" ", data)
    letters, reading = _whole_letters()
    if letters.search(data) is None:
        return data
    return letters.sub(lambda match: reading[match.group()], data)


_REPEATS = frozenset(("runs", "mixed"))


class Prescreen:
    """Compiled raw-text patterns; ``could_fire(text)`` is the whole API.

    Three databases (``worker._prescreen_build``): the terms, letters once each, on
    every text, and again on what the second look makes of the texts the triggers
    flagged (read as ASCII, spaced letters joined, runs of a letter squeezed); the
    triggers; and the terms with letters that may repeat, for runs that mix a letter
    with its leet forms ("fo0ol").
    """

    def __init__(
        self, triggers: Database, terms: Database, repeats: Database, kinds: list[str]
    ) -> None:
        self._triggers, self._terms, self._repeated = triggers, terms, repeats
        self._kinds = [kind.split(":")[0] for kind in kinds]  # per trigger pattern id
        self._full = frozenset(i for i, kind in enumerate(self._kinds) if kind == "full")
        # "runs:x": which letter the pattern saw three times, so only its runs squeeze
        # (a literal prefix, which re finds at C speed, unlike "([a-z])\\1{2,}")
        self._squeezes = {
            pattern: (re.compile(kind[-1].encode() * 3 + b"+"), kind[-1].encode())
            for pattern, kind in enumerate(kinds)
            if kind.startswith("runs:")
        }

    @classmethod
    def build(
        cls, terms: list[str], regexes: list[tuple[str, list[str] | None]]
    ) -> Prescreen | None:
        """``terms``: canonical patterns (" kill you "); ``regexes``: each with its
        literal anchors. None: nothing to screen, or a regex neither translates nor
        anchors, so nothing short of running it can rule it out."""
        built = build_databases(terms, regexes)
        return None if built is None else cls(*built)

    def could_fire(self, text: str) -> bool:
        try:
            raw = text.encode()
        except UnicodeEncodeError:  # lone surrogates: not valid UTF-8 for Hyperscan
            return True
        data = coarse_reading(raw)
        if self._terms.scan(data):
            return True
        seen = self._found(reading(raw), full_stops=False)
        if not seen:  # (never None here: nothing stops this scan)
            return False
        kinds = {self._kinds[pattern] for pattern in seen}
        if "full" in kinds:
            if "\u202e" in text:
                return True  # canonical views also read the overridden part reversed
            # homoglyphs, mathematical letters, ligatures, rare invisibles: the
            # normaliser's own per-character fold, then the same second look
            return self._second_look(fold(text).encode())
        if text.isascii() or kinds <= _REPEATS:  # these very bytes are what to read
            return self._look_again(raw, data, seen)
        return self._second_look(_ascii(text, symbols="spaced" in kinds))

    def _second_look(self, plain: bytes) -> bool:
        """``plain`` (read as ASCII, or folded) through the terms, then ``_look_again``
        for the triggers found in it."""
        data = coarse_reading(plain)
        if self._terms.scan(data):
            return True
        seen = self._found(reading(plain), full_stops=True)
        return seen is None or self._look_again(plain, data, seen)

    def _look_again(self, plain: bytes, data: bytes, seen: set[int]) -> bool:
        """After the terms found nothing in ``data`` (``coarse_reading(plain)``) but
        the triggers ``seen``: its repeats squeezed, and its spaced-out letters joined
        (and that squeezed if need be)."""
        if self._repeats(data, seen):
            return True
        if not any(self._kinds[pattern] == "spaced" for pattern in seen):
            return False
        joined = unspaced(fold_bytes(plain).decode("latin-1"))
        if joined is None:
            return False
        again = joined.encode("latin-1")
        if self._terms.scan(coarse_reading(again)):
            return True
        found = self._found(reading(again), full_stops=True)
        return found is None or self._repeats(coarse_reading(again), found)

    def _repeats(self, data: bytes, seen: set[int]) -> bool:
        """Runs of a letter, which canonical views squeeze to one and to two letters.
        Where each run is one letter repeated, the same squeeze on ``data`` (already
        lower case) and the terms stand for those views; leet characters among a run
        ("fo0ol") take the repeats database, whose letters may repeat."""
        if any(self._kinds[pattern] == "mixed" for pattern in seen):
            return self._repeated.scan(data)
        runs = [self._squeezes[pattern] for pattern in seen if pattern in self._squeezes]
        if not runs:
            return False
        for keep in (1, 2):
            squeezed = data
            for run, letter in runs:
                squeezed = run.sub(letter * keep, squeezed)
            if self._terms.scan(squeezed):
                return True
        return False

    def _found(self, data: bytes, full_stops: bool) -> set[int] | None:
        """The triggers in ``data`` (``reading``); None where ``full_stops`` and a
        "full" one was found (in a second look, what only the full path reads)."""
        seen: set[int] = set()
        if full_stops:
            stopped = self._triggers.scan(data, _collect_until_full, (seen, self._full))
        else:
            stopped = self._triggers.scan(data, _collect, seen)
        return None if stopped else seen


# Match handlers for the triggers' scan, with what they collect into as Hyperscan's
# context argument rather than a closure made for every text.
def _collect(pattern: int, _start: int, _end: int, _flags: int, seen: set[int]) -> bool:
    seen.add(pattern)
    return False  # scan on


def _collect_until_full(
    pattern: int, _start: int, _end: int, _flags: int, context: tuple[set[int], frozenset[int]]
) -> bool:
    seen, full = context
    if pattern in full:
        return True  # stop: only the full path reads it
    seen.add(pattern)
    return False
