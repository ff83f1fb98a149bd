"""Verdicts as the stages decide them: by the rules, from scores, or by the fallback.

Every verdict carries the same base (id, tenant, policy version, latency) and, when the
policy has a shadow, what the shadow policy would have decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.models import CATEGORIES, Action, Category, ModerationRequest, Source, Usage, Verdict
from worker.policy import Policy, TenantPolicy, decide_scores, fallback_action
from worker.rules import RulesResult
from worker.settings import Settings
from worker.validate import DeadLetter, Envelope


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


Outcome = Verdict | DeadLetter
Emit = Callable[[list[tuple[int, Verdict]]], None]


class VerdictBuilder:
    """Builds the verdict of each way a message can be decided."""

    def __init__(self, settings: Settings, model: str | None) -> None:
        self.settings = settings
        self.model = model

    def _base(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        language: str | None,
    ) -> dict[str, Any]:
        return {
            "id": request.id,
            "language": language,
            "tenant": request.tenant,
            "policy_version": policy.version,
            "metadata": request.metadata,
            "redelivered": envelope.redelivered,
            "latency_ms": round((time.monotonic() - received) * 1000, 3),
        }

    def rules(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        rules: RulesResult,
        language: str | None = None,
    ) -> Verdict:
        action = rules.action or Action.ALLOW
        scores = dict.fromkeys(CATEGORIES, 0.0)
        categories = dict.fromkeys(CATEGORIES, False)
        rule = rules.rule
        if rule is not None and rule.category and action is not Action.ALLOW:
            scores[rule.category] = 1.0
            categories[rule.category] = True
        return Verdict(
            **self._base(request, envelope, received, policy, language),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=categories,
            category_scores=scores,
            source=Source.RULES,
            rule_matches=rules.matches,
            reason=rule.reason if rule else "empty text",
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
        return Verdict(
            **self._base(
                pending.request,
                pending.envelope,
                pending.received,
                pending.policy,
                pending.language,
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
        return Verdict(
            **self._base(
                pending.request,
                pending.envelope,
                pending.received,
                pending.policy,
                pending.language,
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

    def rules_floor(self, pending: Pending) -> Verdict:
        """With the LLM stage off, a ``then: llm`` rule's own action decides."""
        assert pending.rules.floor is not None
        rules = RulesResult(pending.rules.floor, pending.rules.matches, pending.rules.rule)
        return self.rules(
            pending.request,
            pending.envelope,
            pending.received,
            pending.policy,
            rules,
            pending.language,
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
