"""The ``signals:`` section of a policy file: rules on who wrote a message and how often.

A signal rule's conditions all have to hold for it to fire; its effect is a floor (the
verdict is at least ``action``) or an ``escalate`` map (``{flag: review}`` makes a
flag a review; ``{review: flag}`` lightens one). Comparisons are written as strings
(``"< 7"``, ``">= 0.9"``) and durations with a unit (``10s``, ``5m``, ``24h``), and are
checked here, on load, so a typo is an error naming the rule rather than a rule that
never fires.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.models import Action

COUNT_CAP = 200  # members a counter keeps (worker.signals.Windows.cap): counts stop there

_COMPARISON = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HISTORY_KEY = re.compile(r"^violations_(\d+(?:ms|s|m|h|d))$")

# what ``when`` may ask of a message, and the kind of value each holds
WHEN_KEYS: dict[str, type] = {
    "author.account_age_days": float,
    "author.trust": float,
    "author.tier": str,
    "author.exempt": bool,
    "has_link": bool,
    "is_reply": bool,
    "language": str,
}


def seconds(value: str | float) -> float:
    """``"10s"`` -> 10.0; a bare number is seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    match = _DURATION.match(str(value))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{value!r} is not a duration such as 10s, 5m, 24h")
    return float(match[1]) * _UNITS[match[2]]


class Comparison:
    """``"< 7"``: a number compared with a bound."""

    __slots__ = ("bound", "op", "text")

    def __init__(self, text: str) -> None:
        match = _COMPARISON.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a comparison such as '< 7' or '>= 0.9'")
        self.text = text.strip()
        self.op = _OPERATORS[match[1]]
        self.bound = float(match[2])

    def holds(self, value: float) -> bool:
        return bool(self.op(value, self.bound))

    def least_count(self) -> float:
        """The smallest count that satisfies it (for the counters' cap)."""
        return next((n for n in range(COUNT_CAP + 2) if self.holds(n)), COUNT_CAP + 1)


def comparison(value: Any) -> Comparison:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Comparison(f"== {value}")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a comparison such as '< 7'")
    return Comparison(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    """More than ``more_than`` messages from one author within ``over``."""

    per: Literal["author"] = "author"
    over: float = Field(description="The window: 10s, 1m...")
    more_than: int = Field(ge=0, lt=COUNT_CAP)

    @field_validator("over", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        return seconds(value)


class Duplicate(_Strict):
    """The same normalised text from ``authors`` distinct authors within ``within``."""

    authors: str = Field(description="A comparison on the number of authors: '>= 20'.")
    within: float

    @field_validator("within", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        return seconds(value)

    @field_validator("authors", mode="before")
    @classmethod
    def _comparison(cls, value: Any) -> str:
        found = comparison(value)
        if found.least_count() > COUNT_CAP:
            raise ValueError(f"counts stop at {COUNT_CAP}: {found.text} can never hold")
        return found.text


class SignalRule(_Strict):
    """Conditions on the author, the message and the counts; a floor or an escalation."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    action: Literal["flag", "review", "block"] | None = Field(
        default=None, description="The verdict is at least this when the rule fires."
    )
    escalate: dict[Action, Action] = Field(
        default_factory=dict,
        description="Action -> action when the rule fires: stricter for repeat offenders "
        "({flag: review}), lighter for trusted authors ({review: flag}).",
    )
    then: Literal["llm", "stop"] = Field(
        default="llm",
        description="'llm': a message the text rules did not decide still goes to the LLM "
        "(the rule is a floor); 'stop': the rule decides it without an LLM call.",
    )
    priority: int = 0
    when: dict[str, Any] = Field(
        default_factory=dict,
        description="author.account_age_days, author.trust (comparisons), author.tier, "
        "language (equal to), author.exempt, has_link, is_reply (true/false).",
    )
    rate: Rate | None = None
    duplicate: Duplicate | None = None
    history: dict[str, str] = Field(
        default_factory=dict,
        description="violations_<window>: a comparison on the author's recent "
        "violations, e.g. {violations_24h: '>= 3'}.",
    )
    matched: tuple[str, ...] = Field(
        default=(),
        description="Text rules (ids, or sets such as 'profanity.*') one of which must "
        "have fired on the message.",
    )
    exempt: Literal["skip", "apply"] = Field(
        default="skip", description="Whether the rule applies to exempt authors."
    )
    reason: str | None = None

    @field_validator("when")
    @classmethod
    def _when(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, wanted in value.items():
            kind = WHEN_KEYS.get(key)
            if kind is None:
                raise ValueError(f"when: unknown key {key!r}; known: {', '.join(WHEN_KEYS)}")
            if kind is bool and not isinstance(wanted, bool):
                raise ValueError(f"when: {key} takes true or false")
            if kind is float:
                comparison(wanted)
            if kind is str and not isinstance(wanted, str | list):
                raise ValueError(f"when: {key} takes a string or a list of strings")
        return value

    @field_validator("history")
    @classmethod
    def _history(cls, value: dict[str, str]) -> dict[str, str]:
        for key, wanted in value.items():
            if not _HISTORY_KEY.match(key):
                raise ValueError(
                    f"history: {key!r} is not violations_<window>, e.g. violations_24h"
                )
            found = comparison(wanted)
            if found.least_count() > COUNT_CAP:
                raise ValueError(f"counts stop at {COUNT_CAP}: {found.text} can never hold")
        return value

    @model_validator(mode="after")
    def _effect(self) -> SignalRule:
        if (self.action is None) == (not self.escalate):
            raise ValueError("a signal rule needs exactly one of action or escalate")
        if self.then == "stop" and self.action is None:
            raise ValueError("then: stop needs an action (an escalation decides nothing)")
        if not (self.when or self.rate or self.duplicate or self.history or self.matched):
            raise ValueError(
                "a signal rule needs at least one of when, rate, duplicate, history, matched"
            )
        return self

    @property
    def history_window_s(self) -> float | None:
        for key in self.history:
            match = _HISTORY_KEY.match(key)
            assert match is not None
            return seconds(match[1])
        return None


class SignalsSection(_Strict):
    """A layer's ``signals:``: its rules, and which verdicts count as violations."""

    violation_at: Literal["flag", "review", "block"] | None = Field(
        default=None,
        description="A verdict at or above this action, from the text rules or the LLM "
        "(not from signal rules), counts as a violation of its author (default flag).",
    )
    rules: tuple[SignalRule, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> SignalsSection:
        ids = [rule.id for rule in self.rules]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"signal rule id {twice[0]!r} appears twice")
        return self


SignalsField = Annotated[SignalsSection | None, Field(default=None)]
