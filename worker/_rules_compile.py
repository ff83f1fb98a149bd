"""Compiling policy layers into what ``RulesEngine`` matches with.

A policy's words, phrases, prefixes, suffixes and domains compile into one Aho-Corasick
automaton over the canonical text (see ``worker.normalise``): one pass per view finds
every pattern at once, whatever the size of the policy. Whole-word matching is the
default and costs nothing extra: canonical text is words between single spaces, so the
pattern " kill you " can only match whole words. Besides rule terms the automaton holds
markers (negative indices, and indices above ``UNLESS_BIT``) for allowlist phrases,
reported-speech phrases, ``unless`` phrases, regex anchors and long runs, so that the
same pass finds them too.

Where Hyperscan is installed, everything that can make a rule fire is also compiled
into a raw-text prescreen (``worker._prescreen``) and a canonical-view prefilter, which
say "nothing here" for most texts in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

import ahocorasick
import structlog

from worker._policy_file import PolicyLayer, Rule
from worker._prescreen import Database, Prescreen
from worker._rules_regex import regex_anchors
from worker.normalise import LONG_RUN_SEEDS, canonical, warm_up

hyperscan: ModuleType | None  # only tested for None here
try:  # optional: a faster "does anything match at all?" pass (x86-64 wheels on PyPI)
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None

log = structlog.get_logger("worker.rules")

ALLOW = -1  # rule index marking an allowlist phrase
DEFER = -2  # rule index marking a reported-speech phrase
LONG_RUN = -3  # a letter three times in a row: squeezed views are worth a look
ANCHOR = -10  # ANCHOR - n: a literal that regex n cannot match without
UNLESS_BIT = 1 << 30  # rule index + this marks a rule's negation phrase


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A policy layer stack, compiled; immutable and safe to share between threads."""

    rules: tuple[Rule, ...]  # in force: later layers' rules replace, ``disable`` removes
    automaton: ahocorasick.Automaton  # pattern -> (length, rule indices and markers)
    has_patterns: bool  # an empty automaton cannot be searched
    regexes: list[tuple[int, re.Pattern[str], bool]]  # (rule index, regex, anchored)
    prefilter: Prefilter | None  # on canonical views
    prescreen: Prescreen | None  # on the raw text


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


def compile_rules(*layers: PolicyLayer) -> CompiledRules:
    """The rules of ``layers`` (base first) in force, compiled."""
    warm_up()
    disabled = {rule_id for layer in layers for rule_id in layer.disable}
    by_id: dict[str, Rule] = {}
    for layer in layers:
        for rule in layer.rules:
            by_id[rule.id] = rule  # a later layer's rule replaces the base's
    rules = tuple(r for r in by_id.values() if r.id not in disabled)
    automaton = ahocorasick.Automaton()
    entries: dict[str, list[int]] = {}

    def add(pattern: str, index: int) -> None:
        if pattern:
            entries.setdefault(pattern, []).append(index)

    for index, rule in enumerate(rules):
        for kind in ("words", "domains", "substrings", "prefixes", "suffixes"):
            for term in getattr(rule, kind):
                add(_pattern(term, kind), index)
                if kind == "words" and " " in term.strip():
                    # spaced-out phrases collapse into one word ("b.u.y f.o.l.l.o.w")
                    add(_pattern(term.replace(" ", ""), kind), index)
        for term in rule.unless:
            add(_pattern(term, "words"), index + UNLESS_BIT)
    for layer in layers:
        for phrase in layer.allow:
            add(_pattern(phrase, "words"), ALLOW)
        for phrase in layer.reported_speech:
            add(_pattern(phrase, "words"), DEFER)
    # Separate patterns, not one alternation: each keeps re's literal-prefix scan,
    # which a combined pattern loses (measured 4x slower on the samples).
    regexes: list[tuple[int, re.Pattern[str], bool]] = []
    for index, rule in enumerate(rules):
        for pattern in rule.regex:
            anchors = regex_anchors(pattern)
            for anchor in anchors or ():
                add(anchor, ANCHOR - len(regexes))
            regexes.append((index, re.compile(pattern), anchors is not None))
    for seed in LONG_RUN_SEEDS:
        add(seed, LONG_RUN)
    prefilter = Prefilter.build(
        [p for p, indices in entries.items() if any(0 <= i < UNLESS_BIT for i in indices)]
        + list(LONG_RUN_SEEDS),
        [pattern for rule in rules for pattern in rule.regex],
    )
    prescreen = _prescreen(entries, [p for rule in rules for p in rule.regex])
    for pattern, indices in entries.items():
        automaton.add_word(pattern, (len(pattern), tuple(indices)))
    if entries:
        automaton.make_automaton()
    return CompiledRules(rules, automaton, bool(entries), regexes, prefilter, prescreen)


def _prescreen(entries: dict[str, list[int]], regexes: list[str]) -> Prescreen | None:
    """Raw-text patterns for everything that can make a rule fire (worker._prescreen)."""
    terms = [p for p, indices in entries.items() if any(0 <= i < UNLESS_BIT for i in indices)]
    screen = Prescreen.build(terms, [(r, regex_anchors(r)) for r in regexes])
    if screen is None and (terms or regexes):
        log.info("prescreen_off", reason="no Hyperscan, or a regex it cannot screen")
    return screen


class Prefilter:
    """One Hyperscan database of every literal and regex that can make a rule fire."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @classmethod
    def build(cls, literals: list[str], regexes: list[str]) -> Prefilter | None:
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
