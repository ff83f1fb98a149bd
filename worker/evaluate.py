"""``python -m worker eval``: how good is the pipeline on a labelled set, and at what cost.

Reads the samples-1680 JSONL format (``prompt`` plus category codes, a missing label
meaning unknown), a CSV with ``text`` and ``label`` columns (0/1, or category names
separated by ``|``), or Multilingual HateCheck's CSV (``test_case``, ``label_gold``,
``functionality``; the language from a ``language`` column or the file name), reported
per language and functionality too (``worker._eval_groups``). CSV files may be gzipped.
Runs the configured pipeline in-process (the LLM stage only when one is configured, or
never with ``--rules-only``).
"""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker._eval_groups import group_report, render_groups
from worker.models import CATEGORIES, Action, Source, Verdict
from worker.pipeline import DeadLetter, Pipeline
from worker.validate import Envelope

CODES = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self-harm",
    "S3": "sexual/minors",
    "H2": "hate/threatening",
    "V2": "violence/graphic",
}


@dataclass(slots=True)
class Sample:
    text: str
    labels: dict[str, bool | None]  # category -> label; None = unknown
    group: str | None = None  # a test suite's functionality ("counter_quote_nh")
    language: str | None = None  # the language the suite says the text is in

    @property
    def any(self) -> bool | None:
        values = list(self.labels.values())
        if any(v is True for v in values):
            return True
        return False if values and all(v is False for v in values) else None


# Multilingual HateCheck names its files after the language.
_LANGUAGE_NAMES = {
    "arabic": "ar", "dutch": "nl", "french": "fr", "german": "de", "hindi": "hi",
    "italian": "it", "mandarin": "zh", "polish": "pl", "portuguese": "pt", "spanish": "es",
    "english": "en",
}  # fmt: skip


def load(path: Path) -> list[Sample]:
    opener = gzip.open if path.suffix == ".gz" else open
    if path.name.endswith((".csv", ".csv.gz")):
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        language = _LANGUAGE_NAMES.get(path.name.split(".")[0].lower())
        return [_csv_row(row, language) for row in rows]
    samples = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            labels = {
                CODES[code]: (None if row.get(code) is None else bool(row[code])) for code in CODES
            }
            samples.append(Sample(row["prompt"], labels))
    return samples


def from_reviews(database_url: str, tenant: str | None = None) -> list[Sample]:
    """What reviewers decided, as samples: an allow is negative for every category, a
    flag or block positive for the categories named (any, when none are), grouped by
    tenant so the report shows each."""
    from worker.reviews import ReviewStore

    store = ReviewStore(database_url)
    try:
        items = store.decided(tenant)
    finally:
        store.close()
    samples = []
    for item in items:
        if item.decision is Action.ALLOW:
            labels: dict[str, bool | None] = dict.fromkeys(CATEGORIES, False)
        elif item.categories:
            labels = {c: c in item.categories for c in CATEGORIES}
        else:
            labels = {"any": True}
        samples.append(Sample(item.text, labels, group=f"reviews:{item.tenant or '_'}"))
    return samples


def _csv_row(row: dict[str, str], language: str | None = None) -> Sample:
    if "test_case" in row and "label_gold" in row:  # Multilingual HateCheck
        gold = row["label_gold"].strip()
        hateful = True if gold == "hateful" else False if gold == "non-hateful" else None
        return Sample(
            row["test_case"],
            {"hate": hateful},
            group=row.get("functionality") or None,
            language=row.get("language") or language,
        )
    label = (row.get("label") or "").strip()
    if label in ("0", "1", "true", "false"):
        flagged = label in ("1", "true")
        return Sample(row["text"], {"any": flagged})
    names = {n.strip() for n in label.split("|") if n.strip()}
    return Sample(row["text"], {c: c in names for c in CATEGORIES})


def _prf(pairs: list[tuple[bool, bool]]) -> dict[str, float | int | None]:
    tp = sum(1 for p, y in pairs if p and y)
    fp = sum(1 for p, y in pairs if p and not y)
    fn = sum(1 for p, y in pairs if not p and y)
    tn = sum(1 for p, y in pairs if not p and not y)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision and recall
        else (0.0 if precision is not None and recall is not None else None)
    )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def average_precision(scored: list[tuple[float, bool]]) -> float | None:
    """Area under the precision-recall curve (average precision, ties broken pessimistically)."""
    positives = sum(1 for _, y in scored if y)
    if not positives:
        return None
    ordered = sorted(scored, key=lambda item: (-item[0], item[1]))
    hits = 0
    total = 0.0
    for rank, (_, label) in enumerate(ordered, 1):
        if label:
            hits += 1
            total += hits / rank
    return total / positives


def _predicted(verdict: Verdict) -> bool:
    """Flagged by a stage that decided; a fallback (not classified) is not a prediction."""
    return verdict.flagged and verdict.source is not Source.FALLBACK


@dataclass(frozen=True, slots=True)
class ScoredSample:
    """One verdict as the curves need it (``--plot``): the scores it carries, what the
    pipeline decided, the labels, and which stage decided. Kept out of the report dict so
    ``--json`` stays as it was."""

    source: Source
    scores: dict[str, float]  # category -> score (rules verdicts: 1.0 for the rule's, else 0)
    decided: dict[str, bool]  # category -> flagged for it by the stage that decided
    flagged: bool  # the verdict's own decision (a fallback is never a prediction)
    labels: dict[str, bool | None]  # category -> label; None = unknown
    any_label: bool | None  # Sample.any


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The report (what ``render`` prints and ``--json`` writes) and the per-sample data."""

    report: dict[str, Any]
    samples: list[ScoredSample]


def evaluate(
    pipeline: Pipeline,
    samples: list[Sample],
    progress: Callable[[int], None] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    return evaluate_samples(pipeline, samples, progress, batch_size).report


def evaluate_samples(
    pipeline: Pipeline,
    samples: list[Sample],
    progress: Callable[[int], None] | None = None,
    batch_size: int | None = None,
) -> Evaluation:
    """``evaluate``, keeping each verdict's scores, labels and source (dead letters have
    none, so they are not among them)."""
    envelopes = [
        Envelope(json.dumps({"id": str(n), "text": s.text}).encode()) for n, s in enumerate(samples)
    ]
    calls_before = len(pipeline.classifier.call_seconds) if pipeline.classifier else 0
    outcomes = pipeline.run(envelopes, progress, batch_size)
    verdicts = [o for o in outcomes if isinstance(o, Verdict)]
    dead = sum(1 for o in outcomes if isinstance(o, DeadLetter))
    pairs = [(s, o) for s, o in zip(samples, outcomes, strict=True) if isinstance(o, Verdict)]
    scored = [v.source in (Source.LLM, Source.CACHE) for v in verdicts]
    report: dict[str, Any] = {"messages": len(samples), "dead_letters": dead}
    known = [(s, v) for s, v in pairs if s.any is not None]
    report["overall"] = _prf([(_predicted(v), bool(s.any)) for s, v in known])
    if any(scored):
        report["overall"]["auprc"] = average_precision(
            [
                (max(v.category_scores.values()), bool(s.any))
                for s, v in known
                if v.source in (Source.LLM, Source.CACHE)
            ]
        )
    per_category: dict[str, Any] = {}
    for category in CATEGORIES:
        rows = [(s, v) for s, v in pairs if s.labels.get(category) is not None]
        if not rows:
            continue
        entry = _prf(
            [
                (
                    v.categories[category] and v.source is not Source.FALLBACK,
                    bool(s.labels[category]),
                )
                for s, v in rows
            ]
        )
        if any(scored):
            entry["auprc"] = average_precision(
                [
                    (v.category_scores[category], bool(s.labels[category]))
                    for s, v in rows
                    if v.source in (Source.LLM, Source.CACHE)
                ]
            )
        per_category[category] = entry
    report["per_category"] = per_category
    rule_blocks = [(s, v) for s, v in pairs if v.source is Source.RULES and v.action == "block"]
    judged = [(s, v) for s, v in rule_blocks if s.any is not None]
    report["rules_block"] = {
        "count": len(rule_blocks),
        "judged": len(judged),
        "precision": (sum(1 for s, _ in judged if s.any) / len(judged)) if judged else None,
    }
    total = len(verdicts) or 1
    report["decided_by"] = {
        src.value: sum(1 for v in verdicts if v.source is src) / total for src in Source
    }
    calls = sum(v.usage.llm_calls for v in verdicts)
    report["llm_calls_per_1000"] = 1000 * calls / total
    report["cost_usd_per_1000"] = 1000 * sum(v.cost_usd for v in verdicts) / total
    latencies = sorted(v.latency_ms for v in verdicts) or [0.0]
    report["latency_ms"] = {"p50": statistics.median(latencies), "p95": _p95(latencies)}
    call_seconds = (
        sorted(list(pipeline.classifier.call_seconds)[calls_before:])
        if (pipeline.classifier)
        else []
    )
    report["llm_call_ms"] = (
        {
            "calls": len(call_seconds),
            "p50": 1000 * statistics.median(call_seconds),
            "p95": 1000 * _p95(call_seconds),
        }
        if call_seconds
        else None
    )
    report["fallbacks"] = sum(1 for v in verdicts if v.source is Source.FALLBACK)
    report["by_language"] = group_report(
        (s.language, s.group, s.labels.get("hate"), v) for s, v in pairs
    )
    return Evaluation(report, [_scored(s, v) for s, v in pairs])


def _scored(sample: Sample, verdict: Verdict) -> ScoredSample:
    decided = verdict.source is not Source.FALLBACK
    return ScoredSample(
        source=verdict.source,
        scores={c: verdict.category_scores[c] for c in CATEGORIES},
        decided={c: verdict.categories[c] and decided for c in CATEGORIES},
        flagged=_predicted(verdict),
        labels=dict(sample.labels),
        any_label=sample.any,
    )


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def sweep(
    make_pipeline: Callable[[int], Pipeline],
    samples: list[Sample],
    sizes: list[int],
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """``evaluate`` once per batch size, each on a fresh pipeline (no cache shared)."""
    rows = []
    for size in sizes:
        report = evaluate(make_pipeline(size), samples, progress, batch_size=size)
        report["batch_size"] = size
        rows.append(report)
    return rows


def render_sweep(rows: list[dict[str, Any]]) -> str:
    """One line per batch size: accuracy, cost and the latency of one LLM call."""

    def fmt(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{'batch':>5s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'auprc':>6s} "
        f"{'fallback':>8s} {'calls/1k':>8s} {'$/1k':>8s} {'call p50':>9s} {'call p95':>9s}"
    ]
    for row in rows:
        overall, calls = row["overall"], row.get("llm_call_ms") or {}
        lines.append(
            f"{row['batch_size']:>5d} {fmt(overall.get('precision')):>6s} "
            f"{fmt(overall.get('recall')):>6s} {fmt(overall.get('f1')):>6s} "
            f"{fmt(overall.get('auprc')):>6s} {row['fallbacks']:>8d} "
            f"{row['llm_calls_per_1000']:>8.1f} {row['cost_usd_per_1000']:>8.4f} "
            f"{fmt(calls.get('p50'), 0):>7s}ms {fmt(calls.get('p95'), 0):>7s}ms"
        )
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [f"messages: {report['messages']}  dead letters: {report['dead_letters']}"]
    header = f"{'category':24s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'fpr':>6s} {'auprc':>6s}"
    lines.append(header)
    for name, entry in [("ANY (overall)", report["overall"]), *report["per_category"].items()]:
        lines.append(
            f"{name:24s} "
            + " ".join(
                f"{fmt(entry.get(k)):>6s}" for k in ("precision", "recall", "f1", "fpr", "auprc")
            )
        )
    rb = report["rules_block"]
    lines.append(
        f"rules block decisions: {rb['count']} ({rb['judged']} with labels), "
        f"precision {fmt(rb['precision'])}"
    )
    shares = ", ".join(f"{k} {v:.1%}" for k, v in report["decided_by"].items())
    lines.append(f"decided by: {shares}")
    lines.append(
        f"LLM calls per 1,000 messages: {report['llm_calls_per_1000']:.1f}; "
        f"cost per 1,000: ${report['cost_usd_per_1000']:.4f}"
    )
    lines.append(
        f"latency p50 {report['latency_ms']['p50']:.2f} ms, "
        f"p95 {report['latency_ms']['p95']:.2f} ms"
    )
    if report.get("llm_call_ms"):
        calls = report["llm_call_ms"]
        lines.append(
            f"LLM calls: {calls['calls']}, p50 {calls['p50']:.0f} ms, "
            f"p95 {calls['p95']:.0f} ms; fallbacks: {report['fallbacks']}"
        )
    lines += render_groups(report.get("by_language") or {})
    return "\n".join(lines)
