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

Terms written in another script (Cyrillic, Arabic, Devanagari, Chinese...) match the
script view instead (``worker._normalise_scripts``): their own letters, whole words, or
anywhere for scripts that put no spaces between words. Rules limited to ``languages``
fire only where the text is in one of them, or its language cannot be told.

The machinery is private: ``worker._rules_compile`` (policy layers -> automaton,
regexes, prefilter and prescreen), ``worker._rules_regex`` (regex anchors) and
``worker._rules_match`` (``RulesEngine.match``).
"""

from __future__ import annotations

from worker._rules_compile import CompiledRules, compile_rules
from worker._rules_match import PASS, RulesEngine, RulesResult
from worker._rules_regex import regex_anchors

__all__ = ["PASS", "CompiledRules", "RulesEngine", "RulesResult", "compile_rules", "regex_anchors"]
