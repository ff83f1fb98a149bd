"""Thresholds from what people decided: per category, the lowest score at which the
LLM's verdicts reach a target precision against the reviewers' decisions, and the
recall that costs.

A decided item is a positive for a category when the reviewer's action is at least the
action being calibrated (``block`` by default) and the category is among those they
named (or, naming none, is the item's highest-scoring one); an ``allow`` is a negative
for every category. Only items the LLM scored count (rule-decided items carry no
scores worth fitting).

    python -m worker calibrate [--precision 0.9] [--action block] [--tenant T] [--write F]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from worker.models import CATEGORIES, Action
from worker.reviews import Decided

__all__ = ["Threshold", "calibrate", "patch", "render"]


@dataclass(frozen=True, slots=True)
class Threshold:
    category: str
    positives: int
    negatives: int
    threshold: float | None  # None: no score reaches the precision
    precision: float | None
    recall: float | None


def _labels(item: Decided, action: Action) -> dict[str, bool]:
    if item.decision is Action.ALLOW:
        return dict.fromkeys(CATEGORIES, False)
    if item.decision.severity < action.severity:
        return {}  # neither: a flag says nothing about the block threshold
    named = set(item.categories)
    if not named and item.scores:
        named = {max(item.scores, key=lambda c: item.scores[c])}
    return {c: c in named for c in CATEGORIES}


def calibrate(
    items: Sequence[Decided], precision: float = 0.9, action: Action = Action.BLOCK
) -> list[Threshold]:
    out = []
    scored = [i for i in items if i.source in ("llm", "cache") and i.scores]
    for category in CATEGORIES:
        pairs = [
            (i.scores.get(category, 0.0), label)
            for i in scored
            if (label := _labels(i, action).get(category)) is not None
        ]
        positives = sum(1 for _, y in pairs if y)
        negatives = len(pairs) - positives
        best: tuple[float, float, float] | None = None
        if positives:
            # the lowest threshold whose precision holds: every score a candidate
            for t in sorted({s for s, _ in pairs if s > 0}):
                tp = sum(1 for s, y in pairs if s >= t and y)
                fp = sum(1 for s, y in pairs if s >= t and not y)
                if tp and tp / (tp + fp) >= precision:
                    best = (t, tp / (tp + fp), tp / positives)
                    break
        out.append(
            Threshold(
                category,
                positives,
                negatives,
                round(best[0], 4) if best else None,
                round(best[1], 4) if best else None,
                round(best[2], 4) if best else None,
            )
        )
    return out


def render(rows: Sequence[Threshold], precision: float, action: Action) -> str:
    lines = [
        f"{action.value} thresholds at precision >= {precision:g} (from reviewers' decisions)",
        f"{'category':26} {'pos':>5} {'neg':>5} {'threshold':>10} {'precision':>10} {'recall':>7}",
    ]
    for r in rows:
        if not r.positives and not r.negatives:
            continue
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
        lines.append(
            f"{r.category:26} {r.positives:>5} {r.negatives:>5} {fmt(r.threshold):>10} "
            f"{fmt(r.precision):>10} {fmt(r.recall):>7}"
        )
    return "\n".join(lines)


def patch(rows: Sequence[Threshold], action: Action, tenant: str | None = None) -> str:
    """A policy layer setting the thresholds found (merge it into the policy file)."""
    thresholds = {r.category: {action.value: r.threshold} for r in rows if r.threshold}
    layer = {"thresholds": thresholds}
    doc = {"tenants": {tenant: layer}} if tenant else layer
    return "# python -m worker calibrate: thresholds from reviewers' decisions\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
