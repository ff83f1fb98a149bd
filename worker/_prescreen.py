"""A conservative "could any rule fire?" test on the raw text, before normalisation.

Normalising a message (``worker.normalise``) costs tens of microseconds of Python, and
most messages match no rule at all. So the policy's terms (and its regexes, translated)
are also compiled into one Hyperscan database over the *original* text's UTF-8 (read
through ``worker._raw_patterns.reading``: lower case, one byte per letter's leet forms,
padded with spaces): each canonical letter becomes a byte class of its forms, between
the same word boundaries canonical text has. One scan of a few microseconds answers "nothing
here" for most messages; only the rest pay for the normaliser and the automaton, which
make the real decision.

Those patterns only stand for text the normaliser changes one character at a time, so
the same scan also looks for what they do not model: accented and fullwidth letters,
homoglyphs from other scripts, mathematical and enclosed letters, ligatures, characters
that fold to nothing between letters (zero-width, combining marks), single letters
split by separators ("k.y.s") and three of a letter in a row ("fuuuck"). A text with
any of them gets a second look: read as ASCII (or, for homoglyphs and the like, through
the normaliser's own per-character fold) and scanned again; where that scan finds
spaced-out letters, again with them joined; where it finds a letter three times in a
row, again with such runs squeezed to one and to two letters, as canonical views
squeeze them; and where leet characters are part of a run ("fo0ol"), by a second
database whose letters may repeat. A right-to-left override always takes the full path.

The promise, held by a property test: a text this calls clean fires no rule.

Why the patterns are plain and the tolerance is in the second look: patterns that
themselves allow separators, repeats and look-alikes between letters take Hyperscan
0.1-0.5 s each to compile (minutes for a 2,000-term policy) and in UTF-8 mode exceed
its pattern size limit; classes with the precomposed accented letters did not compile
a 2,000-term database at all in 9 minutes (16 s without).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from worker._raw_patterns import (
    ALNUM,
    chars,
    expression,
    reading,
    regex_expression,
    render,
    utf8,
)
from worker.normalise import (
    LEET_READINGS,
    SEPARATOR_CHARS,
    fold,
    fold_bytes,
    unspaced,
)

if TYPE_CHECKING:  # the stub's types for ``Database``, which exists only when it imported
    import hyperscan
else:
    try:  # optional, as in worker.rules: x86-64 wheels on PyPI
        import hyperscan
    except ImportError:  # pragma: no cover - depends on the platform
        hyperscan = None

_LETTERISH = ALNUM + "@$!+"  # what the normaliser reads as a spaced-out letter
_SEPARATORS = SEPARATOR_CHARS + "_"  # "_" folds to a space
_MATTERS = frozenset(ALNUM + "".join(LEET_READINGS) + _SEPARATORS)
_RANGES = (range(0x30000), range(0xE0000, 0xE1000))  # where folds differ from identity


# Characters that fold to nothing and are frequent in ordinary text (accents, zero-width,
# soft hyphen, variation selectors, the kana voicing marks NFKD splits from "ジ"): the
# second look drops them itself. A small class, so that re scans for it quickly; the rest
# send a text that needs them down the full path.
_VANISHING = re.compile(
    "[\u0300-\u036f\u00ad\u200b-\u200f\u2060-\u2064\u3099\u309a\ufe00-\ufe0f\ufeff]+"
)
_ACCENTS = re.compile("[\u0300-\u036f]+")


@dataclass(frozen=True, slots=True)
class _Special:
    """Non-ASCII characters canonical views do not simply read as a break."""

    letters: set[int]  # folds to letters, digits or leet characters
    latin: set[int]  # of those, an ASCII letter plus combining accents ("é", "Å"), or a
    # Latin or flag letter NFKD keeps whole that folds to ASCII ("ø", "æ", "🇰": ``whole``)
    whole: dict[bytes, bytes]  # those whole letters' UTF-8 -> their ASCII reading
    dropped: set[int]  # folds to nothing (joins its neighbours), but not in ``vanishing``
    vanishing: set[int]  # the frequent ones: accents, zero-width, soft hyphen, selectors
    separators: set[int]  # folds to separators: may split "k.y.s"
    symbols: set[int]  # of those, the ones NFKD keeps whole: emoji and other symbols


@lru_cache(maxsize=1)
def _special_characters() -> _Special:
    special = _Special(
        letters=set(),
        latin=set(),
        whole={},
        dropped={c for c in range(32) if c not in (9, 10, 13)} | {0x7F},
        vanishing=set(),
        separators=set(),
        symbols=set(),
    )
    for block in _RANGES:
        for code in block:
            if code < 0x80 or 0xD800 <= code < 0xE000:
                continue
            folded = fold(chr(code))
            if not folded:
                (special.vanishing if _VANISHING.match(chr(code)) else special.dropped).add(code)
            elif all(c in _SEPARATORS for c in folded):
                decomposed = unicodedata.normalize("NFKD", chr(code))
                if decomposed.isascii() and decomposed == folded:  # "…", no-break space
                    special.separators.add(code)
                elif decomposed == chr(code) and folded == " ":  # "🙂": see _ascii
                    special.separators.add(code)
                    special.symbols.add(code)
                else:
                    special.letters.add(code)
            elif any(c in _MATTERS for c in folded):
                base = _ACCENTS.sub("", unicodedata.normalize("NFKD", chr(code)))
                if len(base) == 1 and base.isascii() and base.isalpha() and base.lower() == folded:
                    special.latin.add(code)
                elif (
                    base == chr(code)
                    and folded.isascii()
                    and folded.isalpha()
                    and unicodedata.name(base, "").startswith(("LATIN ", "REGIONAL "))
                ):
                    special.latin.add(code)
                    special.whole[base.encode()] = folded.encode()
                else:
                    special.letters.add(code)
    special.letters.add(0x202E)  # right-to-left override: views read what follows reversed
    special.dropped.discard(0x202E)
    return special


# The same characters in UTF-8, for text already decomposed (NFKD) and encoded.
_VANISHING_UTF8 = re.compile(
    rb"\xcc[\x80-\xbf]|\xcd[\x80-\xaf]|\xc2\xad|\xe2\x80[\x8b-\x8f]|\xe2\x81[\xa0-\xa4]"
    rb"|\xe3\x82[\x99\x9a]|\xef\xb8[\x80-\x8f]|\xef\xbb\xbf"
)


@lru_cache(maxsize=1)
def _whole_letters() -> tuple[re.Pattern[bytes], dict[bytes, bytes]]:
    whole = _special_characters().whole
    return re.compile(b"|".join(map(re.escape, sorted(whole, key=len, reverse=True)))), whole


@lru_cache(maxsize=1)
def _symbols() -> re.Pattern[bytes]:
    return re.compile(utf8(_special_characters().symbols).encode())


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


@lru_cache(maxsize=1)
def _triggers() -> list[tuple[str, str]]:
    """What the first database's term patterns do not stand for, and what to do then:
    "full" (the full path), or "latin", "spaced", "runs" (the second look, see
    ``Prescreen.could_fire``)."""
    special = _special_characters()
    letterish = chars(_LETTERISH + _LETTERISH[:26].upper())
    not_letterish = chars(_LETTERISH + _LETTERISH[:26].upper(), negate=True)
    separator = f"(?:{chars(_SEPARATORS)}|{utf8(special.separators)})"
    latin, dropped, vanishing = (
        utf8(special.latin),
        utf8(special.dropped),
        utf8(special.vanishing),
    )
    letter_like = f"(?:{letterish}|{latin})"
    return [
        (utf8(special.letters), "full"),  # Cyrillic "о", "𝐟", "ⓕ", "ß", and U+202E
        (latin, "latin"),  # "é", "Å", "ｋ"
        (f"{letterish}{vanishing}", "latin"),  # "f\u200buck", "e\u0301"
        # a rarer character folding to nothing: it may join letters, and the second
        # look does not drop it (rare enough not to ask whether a letter is next to it,
        # which would cost every text a slower scan)
        (dropped, "full"),
        # single letters split by separators, as worker.normalise collapses them
        (
            f"{not_letterish}{letter_like}{separator}+{letter_like}{separator}+"
            f"{letter_like}{not_letterish}",
            "spaced",
        ),
        *_long_runs(),
    ]


def _long_runs() -> list[tuple[str, str]]:
    """Three forms of a letter in a row: canonical views squeeze such runs ("fuuuck"),
    the first database's patterns do not. "runs": one letter three times, case aside
    ("xxx", "fuUuck"), which the second look squeezes in the raw bytes as the views do;
    "mixed": leet characters among them ("fo0ol", "x1000"), which only the second
    database (letters may repeat) stands for. Leet characters only count where their
    run of leet characters touches a letter, as the normaliser reads them ("$1000"
    stays a number)."""
    leet_run = chars("0123456789" + "".join(LEET_READINGS)) + "*"
    any_letter = chars(ALNUM[:26] + ALNUM[:26].upper())
    patterns = []
    for char in ALNUM[:26]:
        letter = chars(char + char.upper())
        patterns.append((f"{letter}{{3}}", f"runs:{char}"))
        leet = "".join(k for k, v in LEET_READINGS.items() if char in v)
        if not leet:
            continue
        leet_forms = chars(leet)
        # every triple of the letter (L) and its leet forms (T) with at least one of each
        for triple in ("LLT", "LTL", "LTT", "TLL", "TLT", "TTL"):
            patterns.append(("".join(letter if x == "L" else leet_forms for x in triple), "mixed"))
        patterns += [
            (f"{any_letter}{leet_run}{leet_forms}{{3}}", "mixed"),
            (f"{leet_forms}{{3}}{leet_run}{any_letter}", "mixed"),
        ]
    return patterns


_REPEATS = frozenset(("runs", "mixed"))


class Database:
    """A compiled Hyperscan database with a scratch space per thread (Hyperscan's rule).

    ``patterns``: (expression, approximate); an approximate one (a translated regex)
    may be widened further by Hyperscan itself, which a screen can afford.
    """

    def __init__(self, patterns: list[tuple[str, bool]]) -> None:
        single = hyperscan.HS_FLAG_SINGLEMATCH
        self._database = hyperscan.Database()
        self._database.compile(
            expressions=[p.encode() for p, _ in patterns],
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[single | hyperscan.HS_FLAG_PREFILTER if a else single for _, a in patterns],
        )
        self._local = threading.local()

    def scan(self, data: bytes, on_match: Callable[..., bool] | None = None) -> bool:
        """True if ``on_match`` (default: any match) stopped the scan."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        try:  # positional: the binding parses keywords several times slower
            self._database.scan(data, on_match or _stop, 0, None, scratch)
        except hyperscan.ScanTerminated:
            return True
        return False


def _stop(*_: object) -> bool:
    return True  # the first match answers the question


class Prescreen:
    """Compiled raw-text patterns; ``could_fire(text)`` is the whole API.

    Two databases: the first stands for ASCII letters once each; it runs on every text,
    and again on what the second look makes of the texts it flagged (read as ASCII,
    spaced letters joined, runs of a letter squeezed). The second lets each letter
    repeat, for runs that mix a letter with its leet forms ("fo0ol").
    """

    def __init__(self, first: Database, second: Database, kinds: list[str]) -> None:
        self._first, self._second = first, second
        self._kinds = [kind.split(":")[0] for kind in kinds]  # per trigger pattern id
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
        if hyperscan is None or not (terms or regexes):
            return None
        patterns: list[tuple[str, bool]] = []  # (pattern, approximate)

        def add(term: str) -> None:
            pattern = expression(term.strip(), term.startswith(" "), term.endswith(" "))
            if pattern is not None:
                patterns.append((pattern, False))

        for term in terms:
            add(term)
        for regex, anchors in regexes:
            translated = regex_expression(regex)
            if translated is not None:
                patterns.append((translated, True))
            elif anchors is None:
                return None
            else:
                for anchor in anchors:
                    add(anchor)
        triggers = _triggers()
        first = [(p, False) for p, _ in triggers] + [
            (render(p, repeats=False), a) for p, a in patterns
        ]
        second = [(render(p, repeats=True), a) for p, a in patterns]
        return cls(Database(first), Database(second), [kind for _, kind in triggers])

    def could_fire(self, text: str) -> bool:
        try:
            raw = text.encode()
        except UnicodeEncodeError:  # lone surrogates: not valid UTF-8 for Hyperscan
            return True
        data = reading(raw)
        seen: set[int] = set()  # trigger patterns found: the second look decides
        if self._first.scan(data, self._collector(seen, full_stops=False)):
            return True
        if not seen:
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
        """``plain`` (read as ASCII, or folded) through the first database, then
        ``_look_again`` for what that scan finds."""
        data = reading(plain)
        seen: set[int] = set()
        return self._first.scan(data, self._collector(seen, full_stops=True)) or self._look_again(
            plain, data, seen
        )

    def _look_again(self, plain: bytes, data: bytes, seen: set[int]) -> bool:
        """After a scan of ``data`` (``reading(plain)``) matched no term but
        found the triggers ``seen``: its repeats squeezed, and its spaced-out letters
        joined (and that squeezed if need be)."""
        if self._repeats(data, seen):
            return True
        if not any(self._kinds[pattern] == "spaced" for pattern in seen):
            return False
        joined = unspaced(fold_bytes(plain).decode("latin-1"))
        if joined is None:
            return False
        data, seen = reading(joined.encode("latin-1")), set()
        return self._first.scan(data, self._collector(seen, full_stops=True)) or self._repeats(
            data, seen
        )

    def _repeats(self, data: bytes, seen: set[int]) -> bool:
        """Runs of a letter, which canonical views squeeze to one and to two letters.
        Where each run is one letter repeated, the same squeeze on ``data`` (already
        lower case) and the first database stand for those views; leet characters
        among a run ("fo0ol") take the second database, whose letters may repeat."""
        if any(self._kinds[pattern] == "mixed" for pattern in seen):
            return self._second.scan(data)
        runs = [self._squeezes[pattern] for pattern in seen if pattern in self._squeezes]
        if not runs:
            return False
        for keep in (1, 2):
            squeezed = data
            for run, letter in runs:
                squeezed = run.sub(letter * keep, squeezed)
            if self._first.scan(squeezed, self._on_term):
                return True
        return False

    def _collector(self, seen: set[int], full_stops: bool) -> Callable[..., bool]:
        """A match handler that stops the scan on a term and collects the triggers into
        ``seen``; ``full_stops``: a "full" trigger stops it too (in a second look, what
        only the full path reads)."""
        kinds = self._kinds

        def on_match(pattern: int, *_: object) -> bool:
            if pattern < len(kinds) and not (full_stops and kinds[pattern] == "full"):
                seen.add(pattern)
                return False  # scan on
            return True

        return on_match

    def _on_term(self, pattern: int, *_: object) -> bool:
        return pattern >= len(self._kinds)  # a term: stop; a trigger: scan on
