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

from worker._normalise_scripts import script_view
from worker._policy_file import PolicyLayer, Rule
from worker._rules_compile import ALLOW, ANCHOR, DEFER, LONG_RUN, UNLESS_BIT, compile_rules
from worker.language import LazyLanguage
from worker.models import Action, RuleMatch, Span
from worker.normalise import squeezes, views, views_with_offsets

_QUOTES = "'\"‘’‚“”„«»‹›「」『』`"


@dataclass(frozen=True, slots=True)
class RulesResult:
    """What the rules decided: an action (None: send on to the LLM) and why; ``floor``
    is the least action a verdict from the LLM may have (a ``then: llm`` rule fired)."""

    action: Action | None
    matches: list[RuleMatch] = field(default_factory=list)
    rule: Rule | None = None
    floor: Action | None = None


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
        self._native = compiled.native
        self._by_id = {rule.id: rule for rule in self.rules}

    def _native_fires(self, text: str) -> bool:
        """Whether a rule term in another script fires on the script view."""
        if self._native is None or text.isascii():
            return False
        return bool(self._fired(self._native_hits(script_view(text).text)))

    def _native_hits(self, view: str) -> list[tuple[int, int, int]]:
        assert self._native is not None
        return [
            (index, end + 1 - length, end + 1)
            for end, (length, indices) in self._native.iter(view)
            for index in indices
        ]

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

    def match(
        self,
        text: str,
        text_views: list[str] | None = None,
        language: LazyLanguage | None = None,
    ) -> RulesResult:
        """Match the original text (``text_views``: its ``views`` if already computed).

        ``language`` is asked only when a rule limited to some languages fires; such a
        rule is set aside when the text is surely in another language, and fires when
        the language is unknown or cannot be told.
        """
        if (
            self._prescreen is not None
            and not self._prescreen.could_fire(text)
            and not self._native_fires(text)
        ):
            return PASS
        # Nearly every text the prescreen lets through fires, so with a prescreen the
        # offsets path decides at once; without one, the fast views decide first.
        decide_first = self._prescreen is None or text_views is not None
        if (
            decide_first
            and not self._fires(
                text_views if text_views is not None else views(text, squeeze=False)
            )
            and not self._native_fires(text)
        ):
            return PASS
        return self._report(text, language)

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

    def _report(self, text: str, language: LazyLanguage | None = None) -> RulesResult:
        """The rules that fire on ``text``'s views, with spans in ``text`` (PASS if none)."""
        found = views_with_offsets(text)
        all_hits = [self._hits(view.text) for view in found]
        if self._native is not None and not text.isascii():
            found.append(script_view(text))
            all_hits.append(self._native_hits(found[-1].text))
        fired_by_view = [self._fired(hits) for hits in all_hits]
        if not any(fired_by_view):
            return PASS
        limited = {i for fired in fired_by_view for i in fired if self.rules[i].languages}
        if limited and language is not None:
            elsewhere = {i for i in limited if language.rules_out(self.rules[i].languages)}
            fired_by_view = [
                {i: s for i, s in fired.items() if i not in elsewhere} for fired in fired_by_view
            ]
            if not any(fired_by_view):
                return PASS
        # (start, end) in the original text, in the order first found (a dict keeps it)
        found_at: dict[int, dict[tuple[int, int], None]] = {}
        reported = False
        for view, hits, fired in zip(found, all_hits, fired_by_view, strict=True):
            reported = reported or any(i == DEFER for i, _, _ in hits)
            for index, found_spans in fired.items():
                bucket = found_at.setdefault(index, {})
                for start, end in found_spans:
                    bucket[view.span(start, end)] = None
        spans = {i: [Span(start=a, end=b) for a, b in bucket] for i, bucket in found_at.items()}
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
        # the first match that acts decides; a floor ("then: llm") decides nothing, but
        # the verdict, whoever decides it, is at least its action
        acting = [m for m in matches if m.action != "llm"]
        floors = [m for m in acting if self._by_id[m.rule_id].then == "llm"]
        floor = max((Action(m.action) for m in floors), key=_severity_of, default=None)
        deciding = next((m for m in acting if m not in floors), None)
        if deciding is None:
            top = self._by_id[(floors or matches)[0].rule_id]
            return RulesResult(action=None, matches=matches, rule=top, floor=floor)
        decided = Action(deciding.action)
        if floor is not None and floor.severity > decided.severity:
            decided = floor
        return RulesResult(action=decided, matches=matches, rule=self._by_id[deciding.rule_id])


def _quoted(text: str, span: Span) -> bool:
    """The span lies inside a quotation on its line ("he wrote 'X is Y' and ..."): an odd
    number of quotation marks before it, and one after it. An apostrophe between letters
    ("d'être", "don't") is not a quotation mark."""
    line_start = text.rfind("\n", 0, span.start) + 1
    line_end = text.find("\n", span.end)
    before = _quote_marks(text, line_start, span.start)
    after = _quote_marks(text, span.end, len(text) if line_end < 0 else line_end)
    return before % 2 == 1 and after > 0


def _quote_marks(text: str, start: int, end: int) -> int:
    count = 0
    for i in range(start, end):
        if text[i] in _QUOTES:
            between_letters = (
                0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()
            )
            if text[i] in "'’" and between_letters:
                continue  # an apostrophe
            count += 1
    return count


def _severity_of(action: Action) -> int:
    return action.severity


def _severity(action: str) -> int:
    return -1 if action == "llm" else Action(action).severity
