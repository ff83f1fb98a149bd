"""Reading the classifier's reply, whole or as it streams in.

The reply is ``{"r":["0","1hr80","2ht95vi60"]}``: one string per item, its number, then
code+percentage pairs (see ``worker._prompt``). ``ReplyReader`` takes the content in
pieces and hands back each entry as soon as it is complete, so an item's verdict can go
out before the rest of the reply is written. Only a complete, valid entry is an answer:
an entry that breaks the rules (unknown code, a number out of range, a second answer for
the same item) is reported as malformed and its item asked again; whatever follows a
break in the document is not read, and items without an entry are missing, never clean.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import orjson

from worker._prompt import CODES, MAX_CODES_PER_ITEM, MIN_PERCENT
from worker.models import CATEGORIES

Scores = tuple[float, ...]

_CODE_INDEX = {code: i for i, code in enumerate(CODES)}
# A subcategory implies its parent: the parent's score is at least the child's.
_PARENT = {
    CATEGORIES.index(child): CATEGORIES.index(child.split("/")[0])
    for child in CATEGORIES
    if "/" in child
}
_OPEN = re.compile(rb'\s*\{\s*"r"\s*:\s*\[')
_ENTRY = re.compile(rb'\s*(,?)\s*"([^"\\]*)"')  # complete at its closing quote
_CLOSE = re.compile(rb"\s*\]")
_ENTRY_BODY = re.compile(r"(0|[1-9][0-9]{0,5})((?:[a-z]{2}[0-9]{2})*)")
_PAIR = re.compile(r"([a-z]{2})([0-9]{2})")


class Answer(NamedTuple):
    """One item's valid entry: its number in the batch, its scores, and how many
    code+percentage pairs it wrote (its length in tokens follows from that)."""

    index: int  # type: ignore[assignment]  # typeshed: tuple.index is a method; fields may shadow it
    scores: Scores
    codes: int


class ReplyError(Exception):
    """The reply as a whole is not a usable answer (not JSON, wrong shape, refused)."""


def parse_entry(entry: str, n: int) -> Answer | None:
    """The answer one entry gives (scores in CATEGORIES order), or None if it is invalid."""
    match = _ENTRY_BODY.fullmatch(entry)
    if match is None:
        return None
    index = int(match.group(1))
    pairs = _PAIR.findall(match.group(2))
    if index >= n or len(pairs) > MAX_CODES_PER_ITEM:
        return None
    scores = [0.0] * len(CATEGORIES)
    for code, digits in pairs:
        position = _CODE_INDEX.get(code)
        percent = int(digits)
        if position is None or percent < MIN_PERCENT:
            return None
        scores[position] = max(scores[position], percent / 100)
    for child, parent in _PARENT.items():
        if scores[child] > scores[parent]:
            scores[parent] = scores[child]
    return Answer(index, tuple(scores), len(pairs))


class ReplyReader:
    """Incremental reader of one reply for ``n`` items (ASCII content, as the schema is)."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_entries",
        "_opened",
        "_pos",
        "broken",
        "found",
        "malformed",
        "n",
    )

    def __init__(self, n: int) -> None:
        self.n = n
        self.found: dict[int, Scores] = {}
        self.malformed = 0  # entries that were not valid answers
        self.broken: str | None = None  # why reading stopped before the end, if it did
        self._buffer = b""
        self._pos = 0
        self._opened = False
        self._closed = False
        self._entries = 0

    def feed(self, text: str) -> list[Answer]:
        """Add a piece of the content; returns the entries completed by it, in order."""
        if self.broken is not None or self._closed or not text:
            return []
        self._buffer += text.encode("utf-8", "replace")
        out: list[Answer] = []
        buffer = self._buffer
        if not self._opened:
            opened = _OPEN.match(buffer)
            if opened is None:
                if len(buffer.lstrip()) >= 8 and not buffer.lstrip().startswith(b"{"):
                    self.broken = "reply is not the expected JSON object"
                return out
            self._opened = True
            self._pos = opened.end()
        while True:
            match = _ENTRY.match(buffer, self._pos)
            if match is None:
                closed = _CLOSE.match(buffer, self._pos)
                rest = buffer[self._pos :].lstrip()
                if closed is not None:
                    self._closed = True
                elif rest and not rest.startswith((b'"', b",")):
                    self.broken = "reply breaks off the expected shape"
                elif b"\\" in rest or len(rest) > 64:
                    self.broken = "reply entry is not a short code"
                return out
            if bool(match.group(1)) != (self._entries > 0):  # a comma between entries only
                self.broken = "reply breaks off the expected shape"
                return out
            self._pos = match.end()
            self._entries += 1
            parsed = parse_entry(match.group(2).decode("ascii", "replace"), self.n)
            if parsed is None or parsed.index in self.found:
                self.malformed += 1
            else:
                self.found[parsed.index] = parsed.scores
                out.append(parsed)

    def finish(self) -> None:
        """The content is complete: check the document as a whole (JSON, one key)."""
        if self.broken is not None:
            return
        try:
            document = orjson.loads(self._buffer)
        except orjson.JSONDecodeError:
            self.broken = "reply is not valid JSON"
            return
        entries = document.get("r") if isinstance(document, dict) else None
        if not isinstance(entries, list) or set(document) != {"r"}:
            self.broken = "reply does not match the schema"
        elif len(entries) != self.n:
            self.broken = f"reply has {len(entries)} entries for {self.n} items"

    def missing(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.found]
