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

from worker._normalise_scripts import native, native_pattern
from worker._policy_file import PolicyLayer, Rule, rule_disabled
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
    native: ahocorasick.Automaton | None  # terms in other scripts, on the script view


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


# Pieces that stand alone in ordinary canonical text: contractions ("what's" reads
# "what s"), one-letter and common short words. A masked form made of two of these
# ("s it", "a hole") is ordinary text, not a masked word.
_COMMON_PIECES = frozenset(
    "a i s t d m o u y ll re ve it is as at in on an of or to he me we be so no do go up "  # noqa: SIM905
    "us hole".split()
)


def masked_forms(pattern: str, widths: tuple[int, ...] = (1, 2)) -> list[str]:
    """``pattern`` with one or two adjacent inner letters of a word masked.

    A mask symbol ("f*ck", "c**t", "sh#t") is a break between words in canonical text,
    so "f*ck you" reads " f ck you "; these are the forms such a pattern takes. Words of
    fewer than four letters are left whole ("a**" could be anything), and so is a form
    whose two pieces are both words of their own in ordinary text, or, in a one-word
    pattern, single letters.
    """
    words = pattern.split(" ")
    forms: set[str] = set()
    for w, word in enumerate(words):
        if len(word) < 4 or not word.isalpha():
            continue
        for start in range(1, len(word) - 1):
            for width in widths:
                if start + width >= len(word):
                    continue
                left, right = word[:start], word[start + width :]
                if left in _COMMON_PIECES and right in _COMMON_PIECES:
                    continue  # "s it" is in "what's it", "a hole" in "dig a hole"
                if len(left) == 1 and len(right) == 1 and len(words) <= 3:
                    continue  # "c p" is in "C.P. Snow" ("f k you" is a phrase)
                masked = f"{left} {right}"
                forms.add(" ".join([*words[:w], masked, *words[w + 1 :]]))
    return sorted(forms)


_WORD_GROUP = re.compile(r"\(([a-z |]+)\)")


def masked_regex(pattern: str) -> str:
    """``pattern`` with the masked forms of the words in its plain alternations added:
    "(idiot|bitch)" becomes "(idiot|bitch|i iot|b tch|...)" (see ``masked_forms``). One
    letter masked only: each form is one more alternative the prescreen carries."""

    def extend(group: re.Match[str]) -> str:
        options = group.group(1).split("|")
        extra = [
            form[1:-1]  # the option's own leading or trailing space kept
            for option in options
            for form in masked_forms(f" {option} ", widths=(1,))
            if form[1:-1] not in options
        ]
        return "(" + "|".join(options + sorted(set(extra))) + ")"

    return _WORD_GROUP.sub(extend, pattern)


_MAX_ANCHORS = 2000

# A regex's source beyond this is split (``split_regex``): translated for the raw-text
# prescreen, each letter becomes a class of its forms, and Hyperscan refuses a pattern
# of more than about 16,000 characters.
_MAX_REGEX = 900


def split_regex(pattern: str, limit: int = _MAX_REGEX) -> list[str]:
    """``pattern`` as regexes that together match what it matches, none longer than
    ``limit`` where its largest plain alternation can be halved to get there."""
    if len(pattern) <= limit:
        return [pattern]
    groups = list(_WORD_GROUP.finditer(pattern))
    if not groups:
        return [pattern]
    largest = max(groups, key=lambda g: len(g.group(0)))
    options = largest.group(1).split("|")
    if len(options) < 2:
        return [pattern]
    half = len(options) // 2
    head, tail = pattern[: largest.start()], pattern[largest.end() :]
    return [
        piece
        for part in (options[:half], options[half:])
        for piece in split_regex(f"{head}({'|'.join(part)}){tail}", limit)
    ]


def _rule_regexes(rule: Rule) -> tuple[str, ...]:
    """The regexes the rule matches with: its own, with masked forms if it asks."""
    return tuple(masked_regex(p) for p in rule.regex) if rule.masked else rule.regex


def _screened_regexes(rule: Rule) -> tuple[str, ...]:
    """The same, split to a size the prescreen's translation can take (re needs no split:
    one alternation is one scan)."""
    return tuple(piece for p in _rule_regexes(rule) for piece in split_regex(p))


def compile_rules(*layers: PolicyLayer) -> CompiledRules:
    """The rules of ``layers`` (base first) in force, compiled."""
    warm_up()
    disabled = {rule_id for layer in layers for rule_id in layer.disable}
    by_id: dict[str, Rule] = {}
    for layer in layers:
        for rule in layer.rules:
            by_id[rule.id] = rule  # a later layer's rule replaces the base's
    rules = tuple(r for r in by_id.values() if not rule_disabled(r.id, disabled))
    automaton = ahocorasick.Automaton()
    entries: dict[str, list[int]] = {}
    native_entries: dict[str, list[int]] = {}  # terms in other scripts: the script view

    def add(pattern: str, index: int) -> None:
        if pattern:
            entries.setdefault(pattern, []).append(index)

    def add_term(term: str, kind: str, index: int) -> bool:
        """A term in another script goes to the script view's automaton (True)."""
        if not native(term):
            return False
        pattern = native_pattern(term)
        if pattern:
            native_entries.setdefault(pattern, []).append(index)
        return True

    for index, rule in enumerate(rules):
        for kind in ("words", "domains", "substrings", "prefixes", "suffixes"):
            for term in getattr(rule, kind):
                if add_term(term, kind, index):
                    continue
                add(_pattern(term, kind), index)
                if kind == "words" and " " in term.strip():
                    # spaced-out phrases collapse into one word ("b.u.y f.o.l.l.o.w")
                    add(_pattern(term.replace(" ", ""), kind), index)
                if rule.masked:
                    for variant in masked_forms(_pattern(term, kind)):
                        add(variant, index)
        for term in rule.unless:
            if not add_term(term, "words", index + UNLESS_BIT):
                add(_pattern(term, "words"), index + UNLESS_BIT)
    for layer in layers:
        for phrase in layer.allow:
            if not add_term(phrase, "words", ALLOW):
                add(_pattern(phrase, "words"), ALLOW)
        for phrase in layer.reported_speech:
            if not add_term(phrase, "words", DEFER):
                add(_pattern(phrase, "words"), DEFER)
    # Separate patterns, not one alternation: each keeps re's literal-prefix scan,
    # which a combined pattern loses (measured 4x slower on the samples).
    regexes: list[tuple[int, re.Pattern[str], bool]] = []
    for index, rule in enumerate(rules):
        for pattern in _rule_regexes(rule):
            # the automaton carries any number of anchors at no cost per text: a masked
            # alternation's hundreds of words are worth it to keep re off most texts
            anchors = regex_anchors(pattern, limit=_MAX_ANCHORS)
            for anchor in anchors or ():
                add(anchor, ANCHOR - len(regexes))
            regexes.append((index, re.compile(pattern), anchors is not None))
    for seed in LONG_RUN_SEEDS:
        add(seed, LONG_RUN)
    prefilter = Prefilter.build(
        [p for p, indices in entries.items() if any(0 <= i < UNLESS_BIT for i in indices)]
        + list(LONG_RUN_SEEDS),
        [pattern for rule in rules for pattern in _screened_regexes(rule)],
    )
    prescreen = _prescreen(entries, [p for rule in rules for p in _screened_regexes(rule)])
    for pattern, indices in entries.items():
        automaton.add_word(pattern, (len(pattern), tuple(indices)))
    if entries:
        automaton.make_automaton()
    return CompiledRules(
        rules, automaton, bool(entries), regexes, prefilter, prescreen, _native(native_entries)
    )


def _native(entries: dict[str, list[int]]) -> ahocorasick.Automaton | None:
    """The script view's automaton, if any rule has a term in another script."""
    if not any(0 <= i < UNLESS_BIT for indices in entries.values() for i in indices):
        return None
    automaton = ahocorasick.Automaton()
    for pattern, indices in entries.items():
        automaton.add_word(pattern, (len(pattern), tuple(indices)))
    automaton.make_automaton()
    return automaton


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
