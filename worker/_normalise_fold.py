"""The per-character fold: what each character reads as in canonical text.

NFKD and case folding undo compatibility forms (fullwidth, mathematical letters); a
table built once from UTS #39 confusables and the Unicode database then reads
homoglyphs from other scripts as Latin letters and drops combining marks, zero-width
and bidi controls. ASCII text, most of what arrives, skips all of that for one
``bytes.translate``. The tables here are shared with the raw-text prescreen
(``worker._raw_patterns``, ``worker._prescreen``), which must read characters exactly
as this fold does.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

from worker import _disk_cache

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
# What may split single letters: "k y s", "f.u.c.k", "(k)(y)(s)", one letter a line
# (and emoji and other symbols, which the per-character fold reads as spaces).
SEPARATOR_CHARS = " .-*,/~:;|\t\n\r()[]{}<>=#"
# Characters the non-ASCII path must look up: anything outside printable ASCII, and "_".
_SPECIAL = re.compile(r"[^\x20-\x5e\x60-\x7e\t\n\r]")
_DROPPED = frozenset(("Mn", "Me", "Cf", "Cc"))
# ASCII fast path: lower case, "_" read as a space, control characters dropped.
ASCII_FOLD = bytes((c + 32 if 65 <= c <= 90 else 32 if c == 95 else c) for c in range(256))
ASCII_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"
ASCII_KEPT = bytes(0 if c in ASCII_CONTROLS else 1 for c in range(256))  # compress() mask
# The ASCII fold one character at a time, for the path that keeps offsets.
ASCII_CHAR = [bytes([c]).translate(ASCII_FOLD, ASCII_CONTROLS).decode() for c in range(128)]
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
    """Per-character map: drop invisible characters and marks, fold homoglyphs to Latin
    (about a second to build: kept on disk, ``worker._disk_cache``)."""
    return _disk_cache.cached("fold-table", b"", _build_char_table, _dump_table, _load_table)


def _dump_table(table: dict[int, str | None]) -> bytes:
    return json.dumps({str(code): value for code, value in table.items()}).encode()


def _load_table(data: bytes) -> dict[int, str | None]:
    loaded = json.loads(data)
    if not isinstance(loaded, dict):
        raise ValueError("not a table")
    return {int(code): value for code, value in loaded.items()}


def _build_char_table() -> dict[int, str | None]:
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
                # emoji and other symbols: a word break, as any other non-letter is, and
                # a separator between spaced-out letters ("k🙂y🙂s")
                table[code] = " "
    table.update({ord(k): v for k, v in _EXTRA_LOOKALIKES.items()})
    return table


# Filled in place by ``load_table``, so that ``_map_char`` looks it up as a global.
_TABLE: dict[int, str | None] = {}


def load_table() -> None:
    """Build the lookup table (about a second)."""
    _TABLE.update(_char_table())


def fold(text: str) -> str:
    """The per-character part: NFKD, casefold, drop marks and invisibles, homoglyphs."""
    if text.isascii():
        return fold_bytes(text.encode()).decode()
    if not _TABLE:
        load_table()
    return _SPECIAL.sub(_map_char, unicodedata.normalize("NFKD", text).casefold())


def fold_bytes(data: bytes) -> bytes:
    """The per-character fold of ASCII, on bytes (lower case, "_" a space, control
    characters dropped); every other byte stays as it is."""
    return data.translate(ASCII_FOLD, ASCII_CONTROLS)


def _map_char(match: re.Match[str]) -> str:
    char = match.group()
    return _TABLE.get(ord(char), char) or ""
