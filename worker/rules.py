"""Stage 3: the rules prefilter. Canonical text views -> the rules that fired, with spans.

A policy's words, phrases, prefixes, suffixes and domains compile into one Aho-Corasick
automaton over the canonical text (see ``worker.normalise``): one pass per view finds
every pattern at once, whatever the size of the policy. Whole-word matching is the
default and costs nothing extra: canonical text is words between single spaces, so the
pattern " kill you " can only match whole words.

Most text matches nothing, so where Hyperscan is installed every pattern that could make
a rule fire is also compiled into one Hyperscan database: a scan of a couple of
microseconds says "nothing here" for most messages, and only the rest take the
automaton's path with its allowlist, negation and reported-speech logic, straight on the
views with offsets that report the spans (nearly all of them fire).
"""

from __future__ import annotations

import re
import re._constants as _sre
import re._parser as _sre_parse
from dataclasses import dataclass, field
from itertools import product
from types import ModuleType
from typing import cast

import ahocorasick
import structlog

from worker._policy_file import PolicyLayer, Rule
from worker._prescreen import Database, Prescreen
from worker._raw_patterns import Branch, Repeat, Subpattern
from worker.models import Action, RuleMatch, Span
from worker.normalise import (
    LONG_RUN_SEEDS,
    Canonical,
    canonical,
    squeezes,
    views,
    views_with_offsets,
    warm_up,
)

hyperscan: ModuleType | None  # only tested for None here
try:  # optional: a faster "does anything match at all?" pass (x86-64 wheels on PyPI)
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None

log = structlog.get_logger("worker.rules")

_ALLOW = -1  # rule index marking an allowlist phrase
_DEFER = -2  # rule index marking a reported-speech phrase
_LONG_RUN = -3  # a letter three times in a row: squeezed views are worth a look
_ANCHOR = -10  # _ANCHOR - n: a literal that regex n cannot match without
_MAX_EXPANSION = 200


def _expand(items: list[tuple[object, object]]) -> set[str] | None:
    """Every string a literal-only regex fragment can match, or None if not finite/small."""
    result = {""}
    for op, av in items:
        options: set[str] | None
        if op is _sre.LITERAL:
            options = {chr(cast(int, av))}
        elif op is _sre.SUBPATTERN:
            options = _expand(list(cast(Subpattern, av)[-1]))
        elif op is _sre.BRANCH:
            options = set()
            for branch in cast(Branch, av)[1]:
                expanded = _expand(list(branch))
                if expanded is None:
                    return None
                options |= expanded
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            low, high, inner = cast(Repeat, av)
            once = _expand(list(inner))
            if once is None or (high > 2 and (high != low or len(once) ** low > _MAX_EXPANSION)):
                return None  # unbounded, or too many strings ("(?: 0){8}" is one string)
            options = set()
            for count in range(low, high + 1):
                options |= {"".join(p) for p in product(once, repeat=count)}
        else:
            return None
        if options is None:
            return None
        result = {a + b for a, b in product(result, options)}
        if len(result) > _MAX_EXPANSION:
            return None
    return result


def regex_anchors(pattern: str) -> list[str] | None:
    """Literals of which a match must contain one (the rarest-looking required part).

    The automaton looks for them in its one pass, so a regex runs only on the few texts
    that could match it. None: no usable anchor, the regex always runs.
    """
    items = list(_sre_parse.parse(pattern))
    best: set[str] | None = None
    for start in range(len(items)):
        for end in range(start + 1, len(items) + 1):
            expanded = _expand(items[start:end])
            if expanded is None:
                break
            if "" in expanded:
                continue
            if best is None or min(map(len, expanded)) > min(map(len, best)):
                best = expanded
    if best is None or min(map(len, best)) < 3:
        return None
    return sorted({anchor.lower() for anchor in best})  # canonical text is lower case


_QUOTES = "'\"‘’“”«»「」`"
_UNLESS_BIT = 1 << 30  # rule index + this marks a rule's negation phrase


def _pattern(term: str, kind: str) -> str:
    body = canonical(term).strip()
    if not body:
        return ""
    return {
        "words": f" {body} ",
        "domains": f" {body} ",
        "substrings": body,
        "prefixes": f" {body}",
        "suffixes": f"{body} ",
    }[kind]


@dataclass(frozen=True, slots=True)
class RulesResult:
    """What the rules decided: an action (None: send on to the LLM) and why."""

    action: Action | None
    matches: list[RuleMatch] = field(default_factory=list)
    rule: Rule | None = None


PASS = RulesResult(action=None)


class RulesEngine:
    """A compiled policy layer stack; immutable and safe to share between threads."""

    def __init__(self, *layers: PolicyLayer) -> None:
        warm_up()
        disabled = {rule_id for layer in layers for rule_id in layer.disable}
        by_id: dict[str, Rule] = {}
        for layer in layers:
            for rule in layer.rules:
                by_id[rule.id] = rule  # a later layer's rule replaces the base's
        self.rules: tuple[Rule, ...] = tuple(r for r in by_id.values() if r.id not in disabled)
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, list[int]] = {}

        def add(pattern: str, index: int) -> None:
            if pattern:
                entries.setdefault(pattern, []).append(index)

        for index, rule in enumerate(self.rules):
            for kind in ("words", "domains", "substrings", "prefixes", "suffixes"):
                for term in getattr(rule, kind):
                    add(_pattern(term, kind), index)
                    if kind == "words" and " " in term.strip():
                        # spaced-out phrases collapse into one word ("b.u.y f.o.l.l.o.w")
                        add(_pattern(term.replace(" ", ""), kind), index)
            for term in rule.unless:
                add(_pattern(term, "words"), index + _UNLESS_BIT)
        for layer in layers:
            for phrase in layer.allow:
                add(_pattern(phrase, "words"), _ALLOW)
            for phrase in layer.reported_speech:
                add(_pattern(phrase, "words"), _DEFER)
        # Separate patterns, not one alternation: each keeps re's literal-prefix scan,
        # which a combined pattern loses (measured 4x slower on the samples).
        self._regexes: list[tuple[int, re.Pattern[str], bool]] = []
        for index, rule in enumerate(self.rules):
            for pattern in rule.regex:
                anchors = regex_anchors(pattern)
                for anchor in anchors or ():
                    add(anchor, _ANCHOR - len(self._regexes))
                self._regexes.append((index, re.compile(pattern), anchors is not None))
        for seed in LONG_RUN_SEEDS:
            add(seed, _LONG_RUN)
        self._prefilter = _Prefilter.build(
            [p for p, indices in entries.items() if any(0 <= i < _UNLESS_BIT for i in indices)]
            + list(LONG_RUN_SEEDS),
            [pattern for rule in self.rules for pattern in rule.regex],
        )
        self._prescreen = _prescreen(entries, [p for rule in self.rules for p in rule.regex])
        for pattern, indices in entries.items():
            self._automaton.add_word(pattern, (len(pattern), tuple(indices)))
        self._has_patterns = bool(entries)
        if self._has_patterns:
            self._automaton.make_automaton()

    def _hits(self, text: str) -> list[tuple[int, int, int]]:
        """(rule index, start, end) in ``text`` for every pattern found."""
        hits: list[tuple[int, int, int]] = []
        anchored: set[int] = set()
        if self._has_patterns:
            for end, (length, indices) in self._automaton.iter(text):
                for index in indices:
                    if index <= _ANCHOR:
                        anchored.add(_ANCHOR - index)
                    else:
                        hits.append((index, end + 1 - length, end + 1))
        for n, (index, regex, has_anchor) in enumerate(self._regexes):
            if has_anchor and n not in anchored:
                continue
            for match in regex.finditer(text):
                hits.append((index, *match.span()))
        return hits

    def _fired(self, hits: list[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
        allowed = [(s, e) for i, s, e in hits if i == _ALLOW]
        cancelled = {i - _UNLESS_BIT for i, _, _ in hits if i >= _UNLESS_BIT}
        fired: dict[int, list[tuple[int, int]]] = {}
        for index, start, end in hits:
            if index < 0 or index >= _UNLESS_BIT or index in cancelled:
                continue
            if any(start < b and a < end for a, b in allowed):
                continue  # overlaps an allowlisted phrase
            fired.setdefault(index, []).append((start, end))
        return fired

    def match(self, text: str, text_views: list[str] | None = None) -> RulesResult:
        """Match the original text (``text_views``: its ``views`` if already computed)."""
        if self._prescreen is not None and not self._prescreen.could_fire(text):
            return PASS
        # Nearly every text the prescreen lets through fires, so with a prescreen the
        # offsets path decides at once; without one, the fast views decide first.
        decide_first = self._prescreen is None or text_views is not None
        if decide_first and not self._fires(
            text_views if text_views is not None else views(text, squeeze=False)
        ):
            return PASS
        return self._report(text)

    def _fires(self, plain: list[str]) -> bool:
        """Whether a rule fires on these views (``views(text, squeeze=False)``) or on the
        squeezed forms of those with a long run: the views ``views_with_offsets`` reports."""
        if self._prefilter is not None and not any(map(self._prefilter.hit, plain)):
            return False
        squeezed: list[str] = []
        for view in plain:
            hits = self._hits(view)
            if self._fired(hits):
                return True
            if any(i == _LONG_RUN for i, _, _ in hits):
                squeezed += squeezes(view)
        return any(self._fired(self._hits(view)) for view in squeezed)

    def _report(self, text: str) -> RulesResult:
        """The rules that fire on ``text``'s views, with spans in ``text`` (PASS if none)."""
        found = views_with_offsets(text)
        all_hits = [self._hits(view.text) for view in found]
        fired_by_view = [self._fired(hits) for hits in all_hits]
        if not any(fired_by_view):
            return PASS
        spans: dict[int, list[Span]] = {}
        reported = False
        for view, hits, fired in zip(found, all_hits, fired_by_view, strict=True):
            reported = reported or any(i == _DEFER for i, _, _ in hits)
            for index, found_spans in fired.items():
                bucket = spans.setdefault(index, [])
                for start, end in found_spans:
                    span = _span(view, start, end)
                    if span not in bucket:
                        bucket.append(span)
        ordered = sorted(
            spans,
            key=lambda i: (self.rules[i].priority, _severity(self.rules[i].action)),
            reverse=True,
        )
        matches = []
        for i in ordered:
            rule = self.rules[i]
            action, reason = rule.action, rule.reason
            if action == "block" and (reported or all(_quoted(text, s) for s in spans[i])):
                # quoting, reporting or condemning a phrase is not saying it: ask the LLM
                action, reason = "llm", f"{reason or rule.id} (quoted or reported: deferred)"
            matches.append(
                RuleMatch(
                    rule_id=rule.id,
                    action=action,
                    category=rule.category,
                    spans=spans[i],
                    reason=reason,
                )
            )
        matches.sort(key=lambda m: _severity(m.action) >= 0, reverse=True)  # stable
        top_match = matches[0]
        top = next(r for r in self.rules if r.id == top_match.rule_id)
        top_action = None if top_match.action == "llm" else Action(top_match.action)
        return RulesResult(action=top_action, matches=matches, rule=top)


def _prescreen(entries: dict[str, list[int]], regexes: list[str]) -> Prescreen | None:
    """Raw-text patterns for everything that can make a rule fire (worker._prescreen)."""
    terms = [p for p, indices in entries.items() if any(0 <= i < _UNLESS_BIT for i in indices)]
    screen = Prescreen.build(terms, [(r, regex_anchors(r)) for r in regexes])
    if screen is None and (terms or regexes):
        log.info("prescreen_off", reason="no Hyperscan, or a regex it cannot screen")
    return screen


class _Prefilter:
    """One Hyperscan database of every literal and regex that can make a rule fire."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @classmethod
    def build(cls, literals: list[str], regexes: list[str]) -> _Prefilter | None:
        if hyperscan is None or not (literals or regexes):
            return None
        try:
            database = Database(
                [(re.escape(p), False) for p in literals] + [(r, True) for r in regexes]
            )
        except Exception as exc:  # an unsupported construct: the automaton does it all
            log.info("prefilter_off", error=str(exc)[:200])
            return None
        return cls(database)

    def hit(self, view: str) -> bool:
        return self._database.scan(view.encode())


def _quoted(text: str, span: Span) -> bool:
    """A quotation mark just before the span and just after it (same line)."""
    before = text[max(span.start - 3, 0) : span.start].rstrip()
    after = text[span.end : span.end + 3].lstrip(" ,.!?;:")
    return bool(before) and before[-1] in _QUOTES and bool(after) and after[0] in _QUOTES


def _span(view: Canonical, start: int, end: int) -> Span:
    a, b = view.span(start, end)
    return Span(start=a, end=b)


def _severity(action: str) -> int:
    return -1 if action == "llm" else Action(action).severity
