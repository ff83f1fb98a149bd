"""Verdicts as the stages decide them: by the rules, from scores, or by the fallback.

Every verdict carries the same base (id, tenant, policy version, latency) and, when the
policy has a shadow, what the shadow policy would have decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker._signal_rules import NO_SIGNALS, SignalDecision
from worker.models import (
    CATEGORIES,
    Action,
    Category,
    FiredSignal,
    ModerationRequest,
    Source,
    Usage,
    Verdict,
)
from worker.policy import Policy, TenantPolicy, decide_scores, fallback_action
from worker.rules import RulesResult
from worker.settings import Settings
from worker.validate import DeadLetter, Envelope

if TYPE_CHECKING:
    from worker.reviews import Override


@dataclass(slots=True)
class Pending:
    """A valid request the rules could not decide; it needs scores."""

    envelope: Envelope
    request: ModerationRequest
    received: float
    policy: Policy
    tenant: TenantPolicy
    rules: RulesResult
    key: str
    llm_text: str
    truncated: bool
    language: str | None = None
    signals: SignalDecision = NO_SIGNALS
    context: str | None = None  # what goes to the LLM beside the text
    earlier: Override | None = None  # a person's decision on this text, older policy


Outcome = Verdict | DeadLetter
Emit = Callable[[list[tuple[int, Verdict]]], None]
# (tenant, author id, request id) of a verdict that counts against its author
Violation = tuple[str | None, str, str]


class VerdictBuilder:
    """Builds the verdict of each way a message can be decided."""

    def __init__(
        self,
        settings: Settings,
        model: str | None,
        on_violation: Callable[[Violation], None] | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.on_violation = on_violation

    def _base(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        language: str | None,
        decision: SignalDecision = NO_SIGNALS,
        fired: list[FiredSignal] | None = None,
        earlier: Override | None = None,
    ) -> dict[str, Any]:
        return {
            "earlier_decision": earlier.as_earlier() if earlier is not None else None,
            "id": request.id,
            "language": language,
            "tenant": request.tenant,
            "policy_version": policy.version,
            "metadata": request.metadata,
            "redelivered": envelope.redelivered,
            "author_id": request.author.id if request.author else None,
            "signals": fired or [],
            "signals_unavailable": decision.unavailable,
            "latency_ms": round((time.monotonic() - received) * 1000, 3),
        }

    def _signals(
        self,
        request: ModerationRequest,
        policy: Policy,
        tenant: TenantPolicy,
        decision: SignalDecision,
        action: Action,
        counts_against: bool = True,
    ) -> tuple[Action, list[FiredSignal]]:
        """The action after the signal rules; ``action`` (what the text or the LLM said)
        counts against the author when the policy keeps a history and it is severe
        enough."""
        if (
            counts_against
            and self.on_violation is not None
            and request.author is not None
            and policy.windows is not None
            and policy.windows.history_s > 0
            and tenant.signals.is_violation(action)
        ):
            self.on_violation((request.tenant, request.author.id, request.id))
        if decision is NO_SIGNALS:
            return action, []
        return decision.apply(action)

    def rules(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        rules: RulesResult,
        language: str | None = None,
        tenant: TenantPolicy | None = None,
        decision: SignalDecision = NO_SIGNALS,
        earlier: Override | None = None,
    ) -> Verdict:
        action = rules.action or Action.ALLOW
        fired: list[FiredSignal] = []
        if tenant is not None:
            action, fired = self._signals(
                request, policy, tenant, decision, action, counts_against=rules.rule is not None
            )
        scores = dict.fromkeys(CATEGORIES, 0.0)
        categories = dict.fromkeys(CATEGORIES, False)
        rule = rules.rule
        if rule is not None and rule.category and action is not Action.ALLOW:
            scores[rule.category] = 1.0
            categories[rule.category] = True
        if rule is not None:
            reason = rule.reason
        elif fired:
            reason = "; ".join(f.reason or f.rule_id for f in fired)
        else:
            reason = "empty text"
        return Verdict(
            **self._base(request, envelope, received, policy, language, decision, fired, earlier),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=categories,
            category_scores=scores,
            source=Source.RULES,
            rule_matches=rules.matches,
            reason=reason,
            user_reason=rule.user_reason if rule else None,
            shadow=self._shadow(request, policy, None),
        )

    def scored(
        self,
        pending: Pending,
        scores: tuple[float, ...],
        source: Source,
        usage: Usage,
        cost: float,
        model: str | None,
    ) -> Verdict:
        by_category = dict(zip(CATEGORIES, scores, strict=True))
        action, categories = decide_scores(scores, pending.tenant.limits_for(pending.language))
        action = _at_least(action, pending.rules.floor)
        action, fired = self._signals(
            pending.request, pending.policy, pending.tenant, pending.signals, action
        )
        return Verdict(
            **self._base(
                pending.request,
                pending.envelope,
                pending.received,
                pending.policy,
                pending.language,
                pending.signals,
                fired,
                pending.earlier,
            ),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=categories,
            category_scores=by_category,
            source=source,
            rule_matches=pending.rules.matches,
            model=model,
            usage=usage,
            cost_usd=round(cost, 9),
            truncated=pending.truncated,
            shadow=self._shadow(pending.request, pending.policy, by_category),
        )

    def fallback(
        self, pending: Pending, why: str, usage: Usage | None = None, cost: float = 0.0
    ) -> Verdict:
        suspected = {m.category for m in pending.rules.matches if m.category}
        fallback = pending.tenant.fallback
        if self.settings.fallback_action is not None:
            fallback = fallback.model_copy(update={"action": self.settings.fallback_action})
        action = _at_least(fallback_action(fallback, suspected), pending.rules.floor)
        action, fired = self._signals(
            pending.request,
            pending.policy,
            pending.tenant,
            pending.signals,
            action,
            counts_against=False,  # nobody decided it
        )
        return Verdict(
            **self._base(
                pending.request,
                pending.envelope,
                pending.received,
                pending.policy,
                pending.language,
                pending.signals,
                fired,
                pending.earlier,
            ),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=dict.fromkeys(CATEGORIES, False),
            category_scores=dict.fromkeys(CATEGORIES, 0.0),
            source=Source.FALLBACK,
            rule_matches=pending.rules.matches,
            reason=f"not classified: {why}",
            model=self.model,
            usage=usage or Usage(),
            cost_usd=round(cost, 9),
            truncated=pending.truncated,
        )

    def human(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        override: Override,
        language: str | None,
    ) -> Verdict:
        """A text a reviewer decided before, for this tenant and policy version."""
        action = override.decision
        chosen = set(override.categories)
        return Verdict(
            **self._base(request, envelope, received, policy, language),
            action=action,
            flagged=action is not Action.ALLOW,
            categories={c: c in chosen for c in CATEGORIES},
            category_scores={c: (1.0 if c in chosen else 0.0) for c in CATEGORIES},
            source=Source.HUMAN,
            reason=f"reviewer {override.reviewer} decided {action.value} for this text "
            f"(request {override.request_id})",
        )

    def rules_floor(self, pending: Pending) -> Verdict:
        """With the LLM stage off (or a ``then: stop`` signal rule), the floors decide:
        a ``then: llm`` text rule's own action and the signal rules'."""
        rules = RulesResult(
            pending.rules.floor or Action.ALLOW, pending.rules.matches, pending.rules.rule
        )
        return self.rules(
            pending.request,
            pending.envelope,
            pending.received,
            pending.policy,
            rules,
            pending.language,
            pending.tenant,
            pending.signals,
            pending.earlier,
        )

    def _shadow(
        self,
        request: ModerationRequest,
        policy: Policy,
        scores: dict[Category, float] | None,
    ) -> dict[str, Any] | None:
        shadow = policy.shadow
        if shadow is None:
            return None
        tenant = shadow.for_tenant(request.tenant)
        rules = tenant.engine.match(request.text)
        action: Action | None = rules.action
        if action is None and scores is not None:
            action, _ = decide_scores([scores[c] for c in CATEGORIES], tenant.limits)
        return {
            "policy_version": shadow.version,
            "action": action.value if action else None,
            "rule_ids": [m.rule_id for m in rules.matches],
        }


def _at_least(action: Action, floor: Action | None) -> Action:
    return floor if floor is not None and floor.severity > action.severity else action
