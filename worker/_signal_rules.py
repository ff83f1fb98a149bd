"""Signal rules compiled for a tenant, and what they decide for one message.

``SignalRules.evaluate`` sees the request (its author, whether it links or replies),
the counts ``worker.signals`` brought back for it (``None``: Redis could not be asked)
and the text rules that fired. It returns a ``SignalDecision``: a floor, whether a rule
decided without the LLM, and the escalations, which wait for the verdict's action
(known only once the LLM has answered) in ``SignalDecision.apply``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from worker._policy_file import PolicyLayer, rule_disabled
from worker._signal_policy import Comparison, SignalRule, comparison, seconds
from worker.models import Action, FiredSignal, ModerationRequest
from worker.signals import Signals, Windows

# a scheme, www., or a name under a common top-level domain: what a spammer's link is
_TLD = re.compile(
    r"(?:com|net|org|io|ly|gg|me|co|xyz|ru|info|biz|link|app|site|online|top|click|shop|"
    r"live|tk|cn|de|uk)\b"
)
_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def has_link(text: str) -> bool:
    """A regex over the whole text costs more than the rules stage on a long one; the
    string methods run in C, and only each dot is looked at in Python."""
    low = text.lower()
    if "http://" in low or "https://" in low or "www." in low:
        return True
    dot = low.find(".", 2)
    while dot != -1:
        if low[dot - 1] in _NAME and low[dot - 2] in _NAME and _TLD.match(low, dot + 1):
            return True
        dot = low.find(".", dot + 1)
    return False


def account_age_days(request: ModerationRequest, now: datetime | None = None) -> float | None:
    author = request.author
    if author is None:
        return None
    if author.account_age_days is not None:
        return author.account_age_days
    if author.created_at is None:
        return None
    now = now or datetime.now(UTC)
    return max((now - author.created_at).total_seconds() / 86400, 0.0)


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """What the signal rules decided for one message."""

    floor: Action | None = None  # the verdict is at least this
    stop: bool = False  # a ``then: stop`` rule fired: no LLM call
    fired: tuple[FiredSignal, ...] = ()  # the floors that fired
    # (rule, what it saw, whether it holds only if this message is a violation too)
    escalations: tuple[tuple[SignalRule, dict[str, float | str | bool], bool], ...] = ()
    unavailable: bool = False  # counts were needed and Redis could not be asked
    violation_at: Action = Action.FLAG

    def apply(self, action: Action) -> tuple[Action, list[FiredSignal]]:
        """The verdict's action after the floor and the escalations, and every signal
        rule that touched it."""
        fired = list(self.fired)
        if self.floor is not None and self.floor.severity > action.severity:
            action = self.floor
        for rule, observed, with_this_one in self.escalations:
            if with_this_one and action.severity < self.violation_at.severity:
                continue
            to = rule.escalate.get(action)
            if to is not None and to is not action:
                action = to
                fired.append(
                    FiredSignal(
                        rule_id=rule.id, action=to.value, reason=rule.reason, observed=observed
                    )
                )
        return action, fired


NO_SIGNALS = SignalDecision()


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    return lambda rule_id: rule_disabled(rule_id, set(patterns))


class _Compiled:
    """One rule's conditions as checks on a message: each returns the value it compared
    (for the verdict) or ``None`` when it does not hold."""

    __slots__ = ("checks", "needs_author", "needs_counts", "rule")

    def __init__(self, rule: SignalRule) -> None:
        self.rule = rule
        self.needs_counts = bool(rule.rate or rule.duplicate or rule.history)
        self.needs_author = self.needs_counts or any(
            k.startswith("author.") and k != "author.exempt" for k in rule.when
        )
        self.checks = [*self._when(rule), *self._counts(rule)]
        if rule.matched:
            fired_one = _matcher(rule.matched)
            self.checks.append(
                lambda m: next((("rule", r) for r in m.rule_ids if fired_one(r)), None)
            )

    @staticmethod
    def _when(rule: SignalRule) -> list[_Check]:
        checks: list[_Check] = []
        for key, wanted in rule.when.items():
            name = key.removeprefix("author.")
            if key in ("author.account_age_days", "author.trust"):
                checks.append(_number_check(name, comparison(wanted)))
            elif key in ("author.tier", "language"):
                allowed = {wanted} if isinstance(wanted, str) else set(wanted)
                checks.append(_text_check(name, allowed))
            else:
                checks.append(_flag_check(name, bool(wanted)))
        return checks

    @staticmethod
    def _counts(rule: SignalRule) -> list[_Check]:
        checks: list[_Check] = []
        if rule.rate is not None:
            over, more_than = rule.rate.over, rule.rate.more_than
            label = f"messages_{_label(over)}"

            def rate(m: _Message) -> tuple[str, float] | None:
                n = m.counts.messages.get(over) if m.counts else None
                return (label, n) if n is not None and n > more_than else None

            checks.append(rate)
        if rule.duplicate is not None:
            test = comparison(rule.duplicate.authors)

            def duplicate(m: _Message) -> tuple[str, float] | None:
                n = m.counts.duplicate_authors if m.counts else None
                return ("duplicate_authors", n) if n is not None and test.holds(n) else None

            checks.append(duplicate)
        checks += [_history_check(key, comparison(wanted)) for key, wanted in rule.history.items()]
        return checks

    def observe(self, message: _Message) -> dict[str, float | str | bool] | None:
        observed: dict[str, float | str | bool] = {}
        for check in self.checks:
            found = check(message)
            if found is None:
                return None
            observed[found[0]] = found[1]
        return observed


_Check = Callable[["_Message"], "tuple[str, float | str | bool] | None"]


def _number_check(name: str, test: Comparison) -> _Check:
    def check(m: _Message) -> tuple[str, float] | None:
        value = m.number(name)
        return (name, round(value, 3)) if value is not None and test.holds(value) else None

    return check


def _text_check(name: str, allowed: set[str]) -> _Check:
    def check(m: _Message) -> tuple[str, str] | None:
        value = m.text_value(name)
        return (name, value) if value is not None and value in allowed else None

    return check


def _flag_check(name: str, wanted: bool) -> _Check:
    def check(m: _Message) -> tuple[str, bool] | None:
        return (name, wanted) if m.flag(name) is wanted else None

    return check


def _history_check(key: str, test: Comparison) -> _Check:
    def check(m: _Message) -> tuple[str, float] | None:
        n = m.counts.violations if m.counts else None
        if n is None:
            return None
        n += m.this_one
        return (key, n) if test.holds(n) else None

    return check


def _label(window_s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if window_s >= size and window_s % size == 0:
            return f"{window_s / size:g}{unit}"
    return f"{window_s:g}s"


@dataclass(slots=True)
class _Message:
    request: ModerationRequest
    counts: Signals | None
    rule_ids: list[str]
    language: Callable[[], str | None]
    this_one: int = 0  # counted among the violations (an escalation's own message)

    def number(self, name: str) -> float | None:
        if name == "account_age_days":
            return account_age_days(self.request)
        return self.request.author.trust if self.request.author else None

    def text_value(self, name: str) -> str | None:
        if name == "language":
            return self.language()
        return self.request.author.tier if self.request.author else None

    def flag(self, name: str) -> bool:
        if name == "has_link":
            return has_link(self.request.text)
        if name == "is_reply":
            return self.request.reply_to is not None
        return bool(self.request.author and self.request.author.exempt)


@dataclass(frozen=True, slots=True)
class SignalRules:
    """A tenant's signal rules in force, highest priority first."""

    rules: tuple[SignalRule, ...] = ()
    violation_at: Action = Action.FLAG
    _compiled: tuple[_Compiled, ...] = field(init=False, repr=False)
    _anonymous: tuple[_Compiled, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.rules, key=lambda r: r.priority, reverse=True)
        compiled = tuple(_Compiled(r) for r in ordered)
        object.__setattr__(self, "_compiled", compiled)
        # the rules a message without an author can fire (most need one)
        object.__setattr__(self, "_anonymous", tuple(c for c in compiled if not c.needs_author))

    @property
    def needs_counts(self) -> bool:
        return any(c.needs_counts for c in self._compiled)

    def is_violation(self, action: Action) -> bool:
        return action.severity >= self.violation_at.severity

    def evaluate(
        self,
        request: ModerationRequest,
        counts: Signals | None,
        rule_ids: list[str],
        language: Callable[[], str | None] = lambda: None,
    ) -> SignalDecision:
        rules = self._compiled if request.author is not None else self._anonymous
        if not rules:
            return NO_SIGNALS
        message = _Message(request, counts, rule_ids, language)
        exempt = bool(request.author and request.author.exempt)
        floor: Action | None = None
        stop = False
        fired: list[FiredSignal] = []
        escalations = []
        unavailable = False
        for compiled in rules:
            rule = compiled.rule
            if exempt and rule.exempt == "skip":
                continue
            if compiled.needs_counts and counts is None:
                unavailable = True
                continue
            observed = compiled.observe(message)
            if observed is None and rule.action is None and rule.history:
                # "the third violation": an escalation counts the message itself, if its
                # verdict turns out to be one
                message.this_one = 1
                observed = compiled.observe(message)
                message.this_one = 0
                if observed is not None:
                    escalations.append((rule, observed, True))
                continue
            if observed is None:
                continue
            if rule.action is None:
                escalations.append((rule, observed, False))
                continue
            action = Action(rule.action)
            floor = action if floor is None or action.severity > floor.severity else floor
            stop = stop or rule.then == "stop"
            fired.append(
                FiredSignal(
                    rule_id=rule.id, action=rule.action, reason=rule.reason, observed=observed
                )
            )
        if not (fired or escalations or unavailable):
            return NO_SIGNALS
        return SignalDecision(
            floor, stop, tuple(fired), tuple(escalations), unavailable, self.violation_at
        )


def compile_signal_rules(*layers: PolicyLayer) -> SignalRules:
    """The signal rules of ``layers`` (base first): a later layer's rule replaces one
    with its id, ``disable`` removes, the last ``violation_at`` given holds."""
    disabled = {rule_id for layer in layers for rule_id in layer.disable}
    by_id: dict[str, SignalRule] = {}
    violation_at = Action.FLAG
    for layer in layers:
        if layer.signals is None:
            continue
        if layer.signals.violation_at is not None:
            violation_at = Action(layer.signals.violation_at)
        for rule in layer.signals.rules:
            by_id[rule.id] = rule
    rules = tuple(r for r in by_id.values() if not rule_disabled(r.id, disabled))
    return SignalRules(rules, violation_at)


def policy_windows(layers: Sequence[PolicyLayer]) -> Windows | None:
    """What the counters must count for every tenant of a policy; ``None`` when no rule
    needs a count (nothing is sent to Redis then)."""
    rules = [r for layer in layers if layer.signals for r in layer.signals.rules]
    rate = sorted({r.rate.over for r in rules if r.rate})
    duplicate = max((r.duplicate.within for r in rules if r.duplicate), default=0.0)
    history = max((w for r in rules if (w := r.history_window_s) is not None), default=0.0)
    if not (rate or duplicate or history):
        return None
    return Windows(rate_s=tuple(rate), duplicate_s=duplicate, history_s=history)


__all__ = [
    "NO_SIGNALS",
    "SignalDecision",
    "SignalRules",
    "account_age_days",
    "compile_signal_rules",
    "has_link",
    "policy_windows",
    "seconds",
]
