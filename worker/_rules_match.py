"""Matching a text against compiled rules: which fired, where, and what that decides.

``match`` is the hot path: the raw-text prescreen clears most texts at once; the rest
are matched on their canonical views (``worker.normalise``), which for nearly all of
them fire, so those go straight to ``views_with_offsets`` to report spans. A fired rule
is cancelled by its ``unless`` phrases and by an overlapping allowlist phrase; a block
quoted or reported ("he said 'kill you'") defers to the LLM, since quoting, reporting
or condemning a phrase is not saying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker._policy_file import PolicyLayer, Rule
from worker._rules_compile import ALLOW, ANCHOR, DEFER, LONG_RUN, UNLESS_BIT, compile_rules
from worker.models import Action, RuleMatch, Span
from worker.normalise import Canonical, squeezes, views, views_with_offsets

_QUOTES = "'\"‘’“”«»「」`"


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
        compiled = compile_rules(*layers)
        self.rules = compiled.rules
        self._automaton = compiled.automaton
        self._has_patterns = compiled.has_patterns
        self._regexes = compiled.regexes
        self._prefilter = compiled.prefilter
        self._prescreen = compiled.prescreen

    def _hits(self, text: str) -> list[tuple[int, int, int]]:
        """(rule index, start, end) in ``text`` for every pattern found."""
        hits: list[tuple[int, int, int]] = []
        anchored: set[int] = set()
        if self._has_patterns:
            for end, (length, indices) in self._automaton.iter(text):
                for index in indices:
                    if index <= ANCHOR:
                        anchored.add(ANCHOR - index)
                    else:
                        hits.append((index, end + 1 - length, end + 1))
        for n, (index, regex, has_anchor) in enumerate(self._regexes):
            if has_anchor and n not in anchored:
                continue
            for match in regex.finditer(text):
                hits.append((index, *match.span()))
        return hits

    def _fired(self, hits: list[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
        allowed = [(s, e) for i, s, e in hits if i == ALLOW]
        cancelled = {i - UNLESS_BIT for i, _, _ in hits if i >= UNLESS_BIT}
        fired: dict[int, list[tuple[int, int]]] = {}
        for index, start, end in hits:
            if index < 0 or index >= UNLESS_BIT or index in cancelled:
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
            if any(i == LONG_RUN for i, _, _ in hits):
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
            reported = reported or any(i == DEFER for i, _, _ in hits)
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
