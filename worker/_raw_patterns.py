"""Canonical patterns, rewritten to match the raw text they could come from.

The rules match canonical text (``worker.normalise``): lower-case Latin letters and
digits between single spaces. ``expression`` and ``regex_expression`` turn a canonical
term or regex into a Hyperscan pattern that matches wherever the canonical one could
match a view the normaliser derives one character at a time: each letter becomes a
byte class of its case and leetspeak forms, a canonical space a run of anything but
ASCII letters and digits. Wider is allowed (``worker._prescreen`` only uses them to
rule text out), narrower never.

The patterns read the original text's UTF-8 through ``READING``, a byte table that
lower-cases ASCII and gives leet characters that can read as the same letter one byte
("4" and "@" both "@"). A class of a letter's forms is then one or two bytes, and a
word mostly a literal, which Hyperscan finds several times faster than classes of
four or five: ``[kK][iI1!][lL1!|]{2}`` becomes ``k[i!][l!]{2}``. The table only
merges bytes, so every pattern here is written as the image of the raw bytes it
stands for (``chars``), which can only widen it.
"""

from __future__ import annotations

import re
import re._constants as _sre
import re._parser as _sre_parse
from collections.abc import Iterable
from functools import lru_cache
from typing import cast

from worker.normalise import LEET_READINGS

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
ASCII_ALNUM = ALNUM + ALNUM[:26].upper()
# After a one-character atom: "" where letters appear once, "+" where they may repeat
# ("fuuuck"); ``render`` chooses.
_ONE = "\ue001"


def render(pattern: str, repeats: bool) -> str:
    return pattern.replace(_ONE, "+" if repeats else "")


def _byte_ranges(values: set[int]) -> str:
    ordered = sorted(values)
    parts: list[str] = []
    start = prev = ordered[0]
    for value in [*ordered[1:], -1]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(f"\\x{start:02x}" + (f"-\\x{prev:02x}" if prev != start else ""))
        start = prev = value
    return "[" + "".join(parts) + "]"


def _reading() -> bytes:
    table = bytearray(range(256))
    for code in range(ord("A"), ord("Z") + 1):
        table[code] = code + 32
    # leet characters sharing a reading, directly or through another ("1" and "!" read
    # "i" or "l", "|" reads "l"), share one byte: a symbol where the group has one, so
    # that a symbol that may be a word break still reads as one
    groups: list[set[str]] = []
    for char, letters in LEET_READINGS.items():
        touching = [g for g in groups if any(set(LEET_READINGS[c]) & set(letters) for c in g)]
        merged = {char}.union(*touching)
        groups = [g for g in groups if g not in touching] + [merged]
    for group in groups:
        symbols = sorted(c for c in group if not c.isalnum())
        shared = ord((symbols or sorted(group))[0])
        for char in group:
            table[ord(char)] = shared
    return bytes(table)


READING = _reading()


def reading(raw: bytes) -> bytes:
    """What the patterns scan: ``raw`` through ``READING``, between two spaces, as
    canonical text is. A word at either end then has a break on both sides, so no
    pattern needs "^" or "$" alternatives, which cost Hyperscan every byte."""
    return b" " + raw.translate(READING) + b" "


def _breaks() -> bytes:
    """Every byte but a-z, 0-9 and the leet symbols (letters or breaks by their
    neighbours) read as a space."""
    word = set(b"abcdefghijklmnopqrstuvwxyz0123456789") | {READING[ord(c)] for c in LEET_READINGS}
    return bytes(b if b in word else 0x20 for b in range(256))


_BREAKS = _breaks()
# Term patterns (``coarse``) read the text through this: their word breaks become a class
# of a few bytes instead of all but 37, and Hyperscan scans a 2,000-term policy about
# twice as fast. Non-ASCII bytes are spaces here, so what the terms do not stand for
# (the triggers, ``worker._prescreen_build``) is looked for in ``reading`` instead.
COARSE = READING.translate(_BREAKS)


def coarse_reading(raw: bytes) -> bytes:
    """``reading`` through ``COARSE``, for the ``coarse`` patterns."""
    return b" " + raw.translate(COARSE) + b" "


_CLASS = re.compile(r"\[((?:\\x[0-9a-f]{2}(?:-\\x[0-9a-f]{2})?)+)\]")
_RANGE = re.compile(r"\\x([0-9a-f]{2})(?:-\\x([0-9a-f]{2}))?")


def coarse(pattern: str) -> str:
    """A pattern written for ``reading`` (every byte in a class, as ``chars`` writes
    them), for text read through ``coarse_reading``: each class its image under
    ``_BREAKS``, which only merges bytes, so this can only widen it."""
    converted = _CLASS.sub(_coarse_class, pattern)
    if "\\x" in _CLASS.sub("", converted):
        raise ValueError("a byte outside a class: not a pattern chars() wrote")
    return converted


@lru_cache(maxsize=4096)
def _coarse_members(members: str) -> str:
    codes: set[int] = set()
    for match in _RANGE.finditer(members):
        low = int(match.group(1), 16)
        high = int(match.group(2) or match.group(1), 16)
        codes.update(_BREAKS[b] for b in range(low, high + 1))
    return _byte_ranges(codes)


def _coarse_class(match: re.Match[str]) -> str:
    return _coarse_members(match.group(1))


def chars(members: str, negate: bool = False) -> str:
    """The byte class that ``members`` (ASCII), or with ``negate`` every byte but them,
    become through ``READING``."""
    codes = {ord(c) for c in members}
    if negate:
        codes = set(range(256)) - codes
    return _byte_ranges({READING[c] for c in codes})


def forms(char: str) -> str:
    """What the normaliser reads as canonical ``char``: its cases and leet characters."""
    return char + char.upper() + "".join(k for k, v in LEET_READINGS.items() if char in v)


def _letter(char: str) -> str:
    return chars(forms(char)) + _ONE


# Any byte but an ASCII letter or digit: every byte of a non-ASCII character qualifies,
# so this is a superset of "a character that folds to no letter".
BREAK = chars(ASCII_ALNUM, negate=True)


def expression(body: str, left: bool, right: bool) -> str | None:
    """The raw-text pattern for canonical ``body`` (letters, digits, single spaces).

    ``left``/``right``: the canonical pattern starts/ends at a word boundary. None:
    the body holds characters canonical text never has, so it never matches.
    """
    words = body.split()
    if not words or any(c not in ALNUM for word in words for c in word):
        return None
    middle = f"{BREAK}+".join("".join(_letter(c) for c in word) for word in words)
    return (BREAK if left else "") + middle + (BREAK if right else "")


# A canonical space is a run of non-letters, or the padding at either end: inside a
# pattern, where Hyperscan allows no "^" or "$", that reads as "any number of them".
_SPACE = f"{BREAK}*"
_ANY_FORM = chars(ASCII_ALNUM + "".join(LEET_READINGS))
_ANY = f"(?:{_ANY_FORM}{_ONE}|{BREAK}+)"  # any one canonical character


# What re._parser (no stub) parses a pattern into: (opcode, argument) items, where the
# argument of SUBPATTERN is (group, add_flags, del_flags, items), of BRANCH (None,
# branches), of MAX_REPEAT and MIN_REPEAT (min, max, item), of RANGE (low, high).
Items = Iterable[tuple[object, object]]
Subpattern = tuple[object, object, object, Items]
Branch = tuple[None, list[Items]]
Repeat = tuple[int, int, Items]


class _Untranslatable(Exception):
    pass


def regex_expression(pattern: str) -> str | None:
    """A raw-text pattern matching wherever a policy regex (written against canonical
    text) could match a canonical view of that raw text. None: a construct it cannot
    translate (back-references); the caller screens by the regex's anchors instead.

    Assertions (``\\b``, look-arounds) are dropped and negated classes read as any
    character: both only widen the pattern, which a screen may do.
    """
    items = list(_sre_parse.parse(pattern))
    head = tail = ""
    if items and items[0] == (_sre.LITERAL, ord(" ")):
        head, items = BREAK, items[1:]
    if items and items[-1] == (_sre.LITERAL, ord(" ")):
        tail, items = BREAK, items[:-1]
    try:
        return head + _items(items) + tail
    except _Untranslatable:
        return None


def _items(items: list[tuple[object, object]]) -> str:
    return "".join(_item(op, av) for op, av in items)


def _item(op: object, av: object) -> str:
    if op is _sre.LITERAL:
        return _literal(chr(cast(int, av)))
    if op is _sre.IN:
        return _in(cast("list[tuple[object, object]]", av))
    if op in (_sre.ANY, _sre.NOT_LITERAL):
        return _ANY
    if op is _sre.SUBPATTERN:
        return f"(?:{_items(list(cast(Subpattern, av)[-1]))})"
    if op is _sre.BRANCH:
        return "(?:" + "|".join(_items(list(b)) for b in cast(Branch, av)[1]) + ")"
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
        low, high, inner = cast(Repeat, av)
        top = "" if high is _sre.MAXREPEAT else str(high)
        return f"(?:{_items(list(inner))}){{{low},{top}}}"
    if op is _sre.AT:
        return {
            "AT_BEGINNING": "^",
            "AT_BEGINNING_STRING": "^",
            "AT_END": "$",
            "AT_END_STRING": "$",
        }.get(str(av), "")
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return ""
    if op is _sre.CATEGORY:
        return _category(av)
    raise _Untranslatable(str(op))


def _literal(char: str) -> str:
    if char == " ":
        return _SPACE
    if char in ALNUM:
        return _letter(char)
    return _ANY  # canonical text holds no other character: widen, never fail


def _category(category: object) -> str:
    name = str(category)
    if name == "CATEGORY_DIGIT":
        return chars("0123456789") + _ONE
    if name == "CATEGORY_SPACE":
        return _SPACE
    if name == "CATEGORY_WORD":
        return _ANY_FORM + _ONE
    return _ANY  # negated categories: widen


def _in(members: list[tuple[object, object]]) -> str:
    found: set[str] = set()
    space = False
    for op, av in members:
        if op is _sre.NEGATE:
            return _ANY
        if op is _sre.LITERAL:
            letters = [chr(cast(int, av))]
        elif op is _sre.RANGE:
            low, high = cast("tuple[int, int]", av)
            letters = [chr(c) for c in range(low, min(high, 0x7F) + 1)]
        elif op is _sre.CATEGORY:
            name = str(av)
            if name == "CATEGORY_DIGIT":
                letters = list("0123456789")
            elif name == "CATEGORY_SPACE":
                letters = [" "]
            elif name == "CATEGORY_WORD":
                letters = list(ALNUM)
            else:
                return _ANY
        else:
            return _ANY
        for char in letters:
            if char == " ":
                space = True
            elif char in ALNUM:
                found |= set(forms(char))
    parts = ([chars("".join(found)) + _ONE] if found else []) + ([_SPACE] if space else [])
    return "(?:" + "|".join(parts) + ")" if parts else _ANY


def utf8(codes: set[int]) -> str:
    by_prefix: dict[bytes, set[int]] = {}
    for code in codes:
        encoded = chr(code).encode()
        by_prefix.setdefault(encoded[:-1], set()).add(encoded[-1])
    return (
        "(?:"
        + "|".join(
            "".join(f"\\x{b:02x}" for b in prefix) + _byte_ranges(last)
            for prefix, last in sorted(by_prefix.items())
        )
        + ")"
    )
