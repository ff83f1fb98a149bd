"""Building the prescreen's three Hyperscan databases (``worker._prescreen`` scans them).

The *terms* database holds the policy's terms and translated regexes as plain raw-text
patterns (``worker._raw_patterns``: one byte class per letter, letters once each),
written for the coarse reading, where every byte that can only be a word break is a
space. The *triggers* database holds patterns for what those do not stand for, on the
finer reading that keeps non-ASCII bytes, each tagged with what the scan must do when
it sees one ("full": the full path; "latin", "spaced", "runs:x", "mixed": a second
look). The *repeats* database holds the terms again with letters that may repeat, for
runs that mix a letter with its leet forms ("fo0ol"). On long text two scans (terms,
triggers) cost less than one of a database holding both: the terms' breaks, a class of
nearly every byte in the finer reading, are five bytes in the coarse one. On chat-length
text they cost about 3 % more instructions.

Why the patterns are plain and the tolerance is in the second look: patterns that
themselves allow separators, repeats and look-alikes between letters take Hyperscan
0.1-0.5 s each to compile (minutes for a 2,000-term policy) and in UTF-8 mode exceed
its pattern size limit; classes holding the precomposed accented letters keep a
2,000-term database from compiling within 9 minutes (16 s without them).
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from worker import _disk_cache
from worker._raw_patterns import (
    ALNUM,
    chars,
    coarse,
    expression,
    regex_expression,
    render,
    utf8,
)
from worker.normalise import LEET_READINGS, SEPARATOR_CHARS, fold

if TYPE_CHECKING:  # the stub's types for ``Database``, which exists only when it imported
    import hyperscan
else:
    try:  # optional, as in worker._rules_compile: x86-64 wheels on PyPI
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
class Special:
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
def special_characters() -> Special:
    """Every non-ASCII character's class (a second or two to build: kept on disk)."""
    return _disk_cache.cached("special-chars", b"", _classify, _dump_special, _load_special)


_SETS = ("letters", "latin", "dropped", "vanishing", "separators", "symbols")


def _dump_special(special: Special) -> bytes:
    out: dict[str, object] = {name: sorted(getattr(special, name)) for name in _SETS}
    out["whole"] = {k.hex(): v.hex() for k, v in special.whole.items()}
    return json.dumps(out).encode()


def _load_special(data: bytes) -> Special:
    loaded = json.loads(data)
    whole = {bytes.fromhex(k): bytes.fromhex(v) for k, v in loaded["whole"].items()}
    sets = {name: {int(c) for c in loaded[name]} for name in _SETS}
    return Special(whole=whole, **sets)


def _classify() -> Special:
    special = Special(
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
                elif decomposed == chr(code) and folded == " ":  # "🙂": see _prescreen._ascii
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


@lru_cache(maxsize=1)
def _triggers() -> list[tuple[str, str]]:
    """What the terms database does not stand for, and what to do then:
    "full" (the full path), or "latin", "spaced", "runs" (the second look, see
    ``Prescreen.could_fire``)."""
    special = special_characters()
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
    the terms' patterns do not. "runs": one letter three times, case aside ("xxx",
    "fuUuck"), which the second look squeezes in the raw bytes as the views do;
    "mixed": leet characters among them ("fo0ol", "x1000"), which only the repeats
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


class Database:
    """A compiled Hyperscan database with a scratch space per thread (Hyperscan's rule).

    ``patterns``: (expression, approximate); an approximate one (a translated regex)
    may be widened further by Hyperscan itself, which a screen can afford.
    ``collects``: scans go on past a match to collect them, so each pattern reports
    once (``HS_FLAG_SINGLEMATCH``). A database whose scans stop at the first match
    goes without: the flag makes Hyperscan track every pattern's state, and a scan of
    a 2,000-term policy took 1.8x as long with it.
    """

    def __init__(self, patterns: list[tuple[str, bool]], collects: bool = False) -> None:
        single = hyperscan.HS_FLAG_SINGLEMATCH if collects else 0
        expressions = [p.encode() for p, _ in patterns]
        flags = [single | hyperscan.HS_FLAG_PREFILTER if a else single for _, a in patterns]

        def build() -> hyperscan.Database:
            database = hyperscan.Database()
            database.compile(
                expressions=expressions,
                ids=list(range(len(patterns))),
                elements=len(patterns),
                flags=flags,
            )
            return database

        key = json.dumps([[p, f] for (p, _), f in zip(patterns, flags, strict=True)]).encode()
        self._database = _disk_cache.cached(
            "hyperscan", key, build, hyperscan.dumpb, _load, code=False
        )
        self._local = threading.local()

    def scan(
        self, data: bytes, on_match: Callable[..., bool] | None = None, context: object = None
    ) -> bool:
        """True if ``on_match`` (default: any match) stopped the scan; ``context`` is
        passed to it as its last argument."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        try:  # positional: the binding parses keywords several times slower
            self._database.scan(data, on_match or _stop, 0, context, scratch)
        except hyperscan.ScanTerminated:
            return True
        return False


def _load(data: bytes) -> hyperscan.Database:
    """A stored database, checked by Hyperscan itself: its version and platform, and a
    scratch space it must be able to allocate for it."""
    database = hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK)
    hyperscan.Scratch(database)
    return database


def _stop(*_: object) -> bool:
    return True  # the first match answers the question


# Hyperscan refuses a pattern of more than about 16,000 characters (each letter of a
# translated regex becomes a class of its forms); a regex beyond this is screened by
# its anchors instead, or, with none, leaves the prescreen off.
_MAX_TRANSLATED = 15_000


def build_databases(
    terms: list[str], regexes: list[tuple[str, list[str] | None]]
) -> tuple[Database, Database, Database, list[str]] | None:
    """The triggers' database (read through ``reading``), the terms' with letters once
    and with letters that may repeat (both read through ``coarse_reading``), and the
    kind of each trigger (by pattern id), for ``Prescreen.build``. None: nothing to
    screen, or a regex neither translates nor anchors, so nothing short of running it
    can rule it out."""
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
        if translated is not None and len(render(translated, repeats=True)) <= _MAX_TRANSLATED:
            patterns.append((translated, True))
        elif anchors is None:
            return None
        else:
            for anchor in anchors:
                add(anchor)
    triggers = _triggers()
    once = [(coarse(render(p, repeats=False)), a) for p, a in patterns]
    repeated = [(coarse(render(p, repeats=True)), a) for p, a in patterns]
    return (
        Database([(p, False) for p, _ in triggers], collects=True),
        Database(once),
        Database(repeated),
        [kind for _, kind in triggers],
    )
