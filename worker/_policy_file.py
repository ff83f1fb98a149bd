"""The policy file: YAML in, validated models out, with errors that name file, line and rule."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker._signal_policy import SignalsField, SignalsSection
from worker.models import CATEGORIES, Action, Category

RuleAction = Literal["block", "review", "flag", "allow", "llm"]
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One rule, AutoModerator-style: what to match, how, and what to do about it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    action: RuleAction
    category: Category | None = None
    priority: int = 0
    words: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    unless: tuple[str, ...] = Field(default=(), description="Whole words/phrases that cancel it.")
    then: Literal["stop", "llm"] = Field(
        default="stop",
        description="'llm': the message still goes on to the LLM and its verdict is at "
        "least this rule's action (a floor); 'stop': the rule decides.",
    )
    masked: bool = Field(
        default=False,
        description="Also match words with inner letters masked by symbols (f*ck, c**t, "
        "sh#t): each term of four or more letters with one to two inner letters hidden.",
    )
    languages: tuple[LanguageCode, ...] = Field(
        default=(),
        description="Fire only on text in these languages (ISO 639-1), or whose language "
        "cannot be told; empty means every language.",
    )
    reason: str | None = None
    user_reason: str | None = None

    @model_validator(mode="after")
    def _has_patterns(self) -> Rule:
        if not (
            self.words
            or self.substrings
            or self.prefixes
            or self.suffixes
            or self.regex
            or self.domains
        ):
            raise ValueError(
                "a rule needs at least one of words, substrings, prefixes, suffixes, regex, domains"
            )
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
        return value


class Thresholds(_Strict):
    """Score at or above which an action applies; None means never."""

    flag: float | None = Field(default=None, ge=0, le=1)
    review: float | None = Field(default=None, ge=0, le=1)
    block: float | None = Field(default=None, ge=0, le=1)


class Fallback(_Strict):
    """What to do when the LLM cannot answer: one action, with per-category overrides."""

    action: Action = Action.REVIEW
    categories: dict[Category, Action] = Field(default_factory=dict)


class PolicyLayer(_Strict):
    """The parts a tenant may override."""

    thresholds: dict[Category | Literal["default"], Thresholds] = Field(default_factory=dict)
    fallback: Fallback | None = None
    allow: tuple[str, ...] = Field(default=(), description="Phrases inside which no rule fires.")
    reported_speech: tuple[str, ...] = Field(
        default=(),
        description="Phrases showing a message quotes, reports or condemns; with one "
        "present a block rule defers to the LLM (as it does for a quoted match).",
    )
    language_thresholds: dict[LanguageCode, dict[Category | Literal["default"], Thresholds]] = (
        Field(
            default_factory=dict,
            description="Per language, thresholds that replace the ones above for text "
            "in that language (per category; 'default' for the rest).",
        )
    )
    rules: tuple[Rule, ...] = ()
    signals: SignalsField = None
    review_store: tuple[Literal["review", "flag", "block"], ...] | None = Field(
        default=None,
        description="Verdict actions this layer's requests record in the review store "
        "(unset: MODERATION_REVIEW_ACTIONS).",
    )
    disable: tuple[str, ...] = Field(
        default=(),
        description="Base rule ids (text or signal rules) to switch off; a trailing * "
        "switches off a rule set ('profanity.*', 'signals.*').",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicyLayer:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        return self


class PolicyFile(PolicyLayer):
    name: str = "policy"
    shadow: str | None = Field(
        default=None, description="Path of a policy evaluated alongside, recorded, not enforced."
    )
    tenants: dict[str, PolicyLayer] = Field(default_factory=dict)
    llm_context: Literal["replies", "always", "never"] = Field(
        default="replies",
        description="When a request's previous messages go to the LLM as context: for "
        "replies only (reply_to set), always, or never. A request's own context field "
        "always goes.",
    )

    @model_validator(mode="after")
    def _one_window_each(self) -> PolicyFile:
        """One duplicate window and one history window per policy: the counters keep one
        of each (rate windows may differ, each is counted)."""
        sections = [s for s in [self.signals, *(t.signals for t in self.tenants.values())] if s]
        for what, windows in (
            (
                "duplicate.within",
                {r.duplicate.within for r in _signal_rules(sections) if r.duplicate},
            ),
            (
                "history violations_<window>",
                {w for r in _signal_rules(sections) if (w := r.history_window_s) is not None},
            ),
        ):
            if len(windows) > 1:
                listed = ", ".join(f"{w:g}s" for w in sorted(windows))
                raise ValueError(f"signal rules use one {what} per policy, found {listed}")
        return self


def _signal_rules(sections: list[SignalsSection]) -> list[Any]:
    return [rule for section in sections for rule in section.rules]


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file, line and rule."""


def _rule_lines(root: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Line numbers of rules, keyed by their location in the document."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def parse_policy(text: str, source: str) -> PolicyFile:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a mapping")
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        lines = _rule_lines(root)
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(err["loc"])
            where = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
            rule_id = _rule_id_at(data, loc)
            label = f" (rule {rule_id})" if rule_id else ""
            problems.append(f"{source}:{where}{label}: {'.'.join(map(str, loc))}: {err['msg']}")
        raise PolicyError("\n".join(problems)) from None


def _rule_id_at(data: dict[str, Any], loc: tuple[Any, ...]) -> str | None:
    node: Any = data
    rule_id = None
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "id" in node and isinstance(node["id"], str):
            rule_id = node["id"]
    return rule_id


def load_policy_file(path: Path) -> tuple[PolicyFile, str]:
    """Parse the file; return it with its version (a hash of its meaning, not its bytes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    policy = parse_policy(text, str(path))
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True)
    return policy, hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A parsed policy file with its version, and the shadow policy it names (parsed)."""

    spec: PolicyFile
    version: str
    shadow: PolicySource | None = None


def read_policy(path: Path, *, with_shadow: bool = True) -> PolicySource:
    """Parse the file and, unless ``with_shadow`` is false, the shadow policy it names
    (a path relative to the file's directory). A shadow's own shadow is not read: one
    policy is evaluated alongside, not a chain."""
    spec, version = load_policy_file(path)
    shadow = None
    if spec.shadow and with_shadow:
        shadow = read_policy((path.parent / spec.shadow).resolve(), with_shadow=False)
    return PolicySource(spec, version, shadow)


def layer_thresholds(*layers: PolicyLayer, language: str | None = None) -> dict[str, Thresholds]:
    """Per-category thresholds after applying the layers in order (base first); with
    ``language``, each layer's overrides for that language on top of that layer's own."""
    merged: dict[str, Thresholds] = {}
    default = Thresholds()
    for layer in layers:
        tables = [layer.thresholds]
        if language is not None:
            tables.append(layer.language_thresholds.get(language, {}))
        for table in tables:
            default = table.get("default", default)
            for category, value in table.items():
                if category != "default":
                    merged[category] = value
    return {c: merged.get(c, default) for c in CATEGORIES}


def rule_disabled(rule_id: str, disable: set[str]) -> bool:
    """Whether ``disable`` names the rule, by id or by a set ('profanity.*')."""
    if rule_id in disable:
        return True
    return any(d.endswith("*") and rule_id.startswith(d[:-1]) for d in disable)
