"""Scores -> action: per-category thresholds, compiled for the hot path, and the fallback."""

from __future__ import annotations

import math
from collections.abc import Sequence, Set

from worker._policy_file import Fallback, Thresholds
from worker.models import CATEGORIES, Action, Category

# Per category, in CATEGORIES order: (name, lowest limit, ((limit, action), ...) most
# severe first). Compiled once per tenant, so that deciding a message walks tuples of
# floats rather than pydantic objects.
Limits = tuple[tuple[Category, float, tuple[tuple[float, Action], ...]], ...]


def decide(
    scores: dict[str, float], thresholds: dict[str, Thresholds]
) -> tuple[Action, dict[Category, bool]]:
    """The most severe action any category reaches; ``categories`` = reached flag or more."""
    return decide_scores([scores.get(c, 0.0) for c in CATEGORIES], compile_limits(thresholds))


def compile_limits(thresholds: dict[str, Thresholds]) -> Limits:
    out = []
    for category in CATEGORIES:
        limits = thresholds[category]
        steps = tuple(
            (limit, action)
            for action, limit in (
                (Action.BLOCK, limits.block),
                (Action.REVIEW, limits.review),
                (Action.FLAG, limits.flag),
            )
            if limit is not None
        )
        out.append((category, min((lim for lim, _ in steps), default=math.inf), steps))
    return tuple(out)


def decide_scores(scores: Sequence[float], limits: Limits) -> tuple[Action, dict[Category, bool]]:
    """``decide`` for scores in CATEGORIES order against compiled limits (the hot path)."""
    action = Action.ALLOW
    severity = 0
    flagged = dict.fromkeys(CATEGORIES, False)
    for (category, lowest, steps), score in zip(limits, scores, strict=True):
        if not score >= lowest:  # most scores, and NaN
            continue
        for limit, candidate in steps:
            if score >= limit:
                flagged[category] = True
                if candidate.severity > severity:
                    action, severity = candidate, candidate.severity
                break
    return action, flagged


def fallback_action(fallback: Fallback, suspected: Set[str] | None = None) -> Action:
    """The action when the LLM cannot answer: fail closed where the policy says so."""
    action = fallback.action
    for category, override in fallback.categories.items():
        if (suspected is None or category in suspected) and override.severity > action.severity:
            action = override
    return action
