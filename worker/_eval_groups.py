"""Per language and per functionality: what a labelled suite with test groups shows.

Multilingual HateCheck (and any CSV with ``functionality``) asks more than precision and
recall: which kinds of hateful text the rules catch (direct threats, slurs, spelling
variations) and, just as much, which innocent kinds they hit (counter-speech, quoting,
reclaimed words). A block is what a rule can do wrong on its own, so it is counted
apart from every other action.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.models import Source, Verdict


def group_report(
    pairs: Iterable[tuple[str | None, str | None, bool | None, Verdict]],
) -> dict[str, Any]:
    """(language, group, hateful, verdict) per sample -> counts per language and group."""
    languages: dict[str, dict[str, Any]] = {}
    for language, group, hateful, verdict in pairs:
        if group is None or hateful is None:
            continue
        entry = languages.setdefault(
            language or "-",
            {
                "hateful": 0,
                "caught": 0,
                "blocked_hateful": 0,
                "innocent": 0,
                "blocked": 0,
                "hit": 0,
                "groups": {},
            },
        )
        row = entry["groups"].setdefault(
            group, {"hateful": hateful, "n": 0, "block": 0, "any": 0, "detected": {}}
        )
        blocked = verdict.action == "block" and verdict.source is not Source.FALLBACK
        hit = verdict.action != "allow" and verdict.source is not Source.FALLBACK
        row["n"] += 1
        row["block"] += blocked
        row["any"] += hit
        detected = verdict.language or "none"
        row["detected"][detected] = row["detected"].get(detected, 0) + 1
        if hateful:
            entry["hateful"] += 1
            entry["blocked_hateful"] += blocked
            entry["caught"] += hit
        else:
            entry["innocent"] += 1
            entry["blocked"] += blocked
            entry["hit"] += hit
    return languages


def render_groups(languages: dict[str, Any]) -> list[str]:
    if not languages:
        return []
    lines = [
        "",
        f"{'language':8s} {'hateful':>8s} {'blocked':>8s} {'any':>8s}   "
        f"{'non-hateful':>11s} {'blocked':>8s} {'any':>8s}",
    ]
    for language, e in sorted(languages.items()):
        lines.append(
            f"{language:8s} {e['hateful']:8d} {_pct(e['blocked_hateful'], e['hateful']):>8s} "
            f"{_pct(e['caught'], e['hateful']):>8s}   {e['innocent']:11d} "
            f"{_pct(e['blocked'], e['innocent']):>8s} {_pct(e['hit'], e['innocent']):>8s}"
        )
    for language, e in sorted(languages.items()):
        lines.append("")
        lines.append(f"{language}: per functionality ('any' = block, review or flag)")
        for group, row in sorted(e["groups"].items(), key=lambda kv: (not kv[1]["hateful"], kv[0])):
            block, hit, n = row["block"], row["any"], row["n"]
            lines.append(
                f"  {group:24s} {n:5d}  block {block:4d} ({_pct(block, n)})"
                f"  any {hit:4d} ({_pct(hit, n)})"
            )
    return lines


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"
