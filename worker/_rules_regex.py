"""Literal anchors of policy regexes, so a regex runs only on texts that could match it.

A policy regex is written against canonical text. Most contain a required literal part
("(free|cheap) (v[i1]agra|cialis)" needs one of a few words); the automaton looks for
those literals in the pass it makes anyway, and the regex runs only where one occurs.
"""

from __future__ import annotations

import re._constants as _sre
import re._parser as _sre_parse
from itertools import product
from typing import cast

from worker._raw_patterns import Branch, Repeat, Subpattern

_MAX_EXPANSION = 200


def _expand(items: list[tuple[object, object]], limit: int = _MAX_EXPANSION) -> set[str] | None:
    """Every string a literal-only regex fragment can match, or None if not finite/small."""
    result = {""}
    for op, av in items:
        options: set[str] | None
        if op is _sre.LITERAL:
            options = {chr(cast(int, av))}
        elif op is _sre.SUBPATTERN:
            options = _expand(list(cast(Subpattern, av)[-1]), limit)
        elif op is _sre.BRANCH:
            options = set()
            for branch in cast(Branch, av)[1]:
                expanded = _expand(list(branch), limit)
                if expanded is None:
                    return None
                options |= expanded
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            low, high, inner = cast(Repeat, av)
            once = _expand(list(inner), limit)
            if once is None or (high > 2 and (high != low or len(once) ** low > limit)):
                return None  # unbounded, or too many strings ("(?: 0){8}" is one string)
            options = set()
            for count in range(low, high + 1):
                options |= {"".join(p) for p in product(once, repeat=count)}
        else:
            return None
        if options is None:
            return None
        result = {a + b for a, b in product(result, options)}
        if len(result) > limit:
            return None
    return result


def regex_anchors(pattern: str, limit: int = _MAX_EXPANSION) -> list[str] | None:
    """Literals of which a match must contain one (the rarest-looking required part),
    ``limit`` of them at most.

    The automaton looks for them in its one pass, so a regex runs only on the few texts
    that could match it. None: no usable anchor, the regex always runs.
    """
    items = list(_sre_parse.parse(pattern))
    best: set[str] | None = None
    for start in range(len(items)):
        for end in range(start + 1, len(items) + 1):
            expanded = _expand(items[start:end], limit)
            if expanded is None:
                break
            if "" in expanded:
                continue
            if best is None or min(map(len, expanded)) > min(map(len, best)):
                best = expanded
    if best is None or min(map(len, best)) < 3:
        return None
    return sorted({anchor.lower() for anchor in best})  # canonical text is lower case
