"""``python -m worker eval --plot DIR``: precision-recall curves, score histograms and a
small HTML page, for whoever tunes the policy's thresholds.

matplotlib is an optional extra (``moderation-worker[plot]``) and is imported only inside
the functions that draw, so neither ``eval`` without ``--plot`` nor the worker loads it.
Figures are drawn on the Agg canvas directly, without pyplot: no global state, no display.

The curves use the scores the verdicts carry: the LLM's (and the cache's, which are the
LLM's from before) and the rules' (1.0 for the category of the rule that decided, 0
elsewhere). A fallback verdict was not classified, so it is no prediction: it is left out
of the curves, and the page and the titles say how many were.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.evaluate import ScoredSample, average_precision
from worker.models import Source

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

OVERALL = "overall"
INSTALL_HINT = "pip install 'moderation-worker[plot]'"
_BINS = [i / 20 for i in range(21)]  # 0.05 wide on 0-1: the scores' whole range


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise ``PlotUnavailable`` now, before an evaluation that may take minutes (and cost
    LLM calls) has run for pictures that cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Series:
    """One curve's data: the labelled verdicts of one category (or overall) that a stage
    decided, and how many labelled fallbacks were left out."""

    name: str
    scores: list[float]
    labels: list[bool]
    decided: list[bool]  # what the pipeline decided (its operating point)
    sources: Counter[str]  # whose scores these are: rules, llm, cache
    left_out: int  # labelled fallback verdicts (not predictions)
    left_out_positives: int

    @property
    def positives(self) -> int:
        return sum(self.labels)

    @property
    def negatives(self) -> int:
        return len(self.labels) - self.positives


def series(samples: list[ScoredSample], name: str) -> Series:
    """The curve data of category ``name``; ``OVERALL``: any category, the highest score
    against "flagged for anything", as the report's overall row."""
    scores: list[float] = []
    labels: list[bool] = []
    decided: list[bool] = []
    sources: Counter[str] = Counter()
    left_out = left_out_positives = 0
    for sample in samples:
        label = sample.any_label if name == OVERALL else sample.labels.get(name)
        if label is None:
            continue
        if sample.source is Source.FALLBACK:
            left_out += 1
            left_out_positives += label
            continue
        if name == OVERALL:
            scores.append(max(sample.scores.values(), default=0.0))
            decided.append(sample.flagged)
        else:
            scores.append(sample.scores.get(name, 0.0))
            decided.append(sample.decided.get(name, False))
        labels.append(label)
        sources[sample.source.value] += 1
    return Series(name, scores, labels, decided, sources, left_out, left_out_positives)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float


def pr_curve(scores: list[float], labels: list[bool]) -> list[CurvePoint]:
    """One point per distinct score, highest first: flag everything scored at or above it.

    Equal scores make one point, as no threshold can split them; so a rules-only run (scores
    of 0 or 1) has two points, not a curve that pretends to an ordering it has not.
    """
    positives = sum(labels)
    if not positives:
        return []
    ordered = sorted(zip(scores, labels, strict=True), key=lambda item: -item[0])
    points = []
    tp = fp = 0
    for i, (score, label) in enumerate(ordered):
        tp += label
        fp += not label
        if i + 1 < len(ordered) and ordered[i + 1][0] == score:
            continue
        points.append(CurvePoint(score, tp / (tp + fp), tp / positives))
    return points


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Precision and recall of the pipeline's own decisions: on the curve's samples (so the
    marker is comparable with the curve) and as the report counts them (labelled fallbacks
    included as not flagged: same precision, lower recall)."""

    precision: float | None  # None: flagged none of them
    recall: float
    report_recall: float


def operating_point(data: Series) -> OperatingPoint | None:
    if not data.positives:
        return None
    tp = sum(1 for d, y in zip(data.decided, data.labels, strict=True) if d and y)
    flagged = sum(data.decided)
    return OperatingPoint(
        tp / flagged if flagged else None,
        tp / data.positives,
        tp / (data.positives + data.left_out_positives),
    )


def describe_sources(data: Series) -> str:
    """Whose scores the curve is made of, for titles and the page: a rules-only curve is a
    different thing from an LLM one and must say so."""
    made_of = ", ".join(f"{src} {n}" for src, n in sorted(data.sources.items())) or "none"
    text = f"scores from {made_of}"
    if data.left_out:
        text += f"; {data.left_out} fallback verdicts left out"
    return text


def safe_name(name: str) -> str:
    """A file name part for a category (``hate/threatening`` -> ``hate-threatening``):
    letters, digits, ``_`` and ``-`` only, so no ``/``, ``..`` or markup can get through."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "category"


def file_stems(names: list[str]) -> dict[str, str]:
    """Distinct safe stems for the names (``a/b`` and ``a-b`` must not overwrite each other)."""
    stems: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = base = safe_name(name)
        n = 2
        while stem in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem)
        stems[name] = stem
    return stems


def _text(value: str) -> str:
    """Data in a matplotlib title or legend: a ``$`` would start mathtext."""
    return value.replace("$", r"\$")


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")


def _save(figure: Figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")


def plot_pr(data: Series, path: Path) -> float | None:
    """The precision-recall curve with its AP, the share of positives (what a random
    ranking gets) and the current policy's operating point. Returns the AP."""
    points = pr_curve(data.scores, data.labels)
    ap = average_precision(list(zip(data.scores, data.labels, strict=True)))
    figure = _figure()
    ax = figure.add_subplot()
    recalls = [0.0] + [p.recall for p in points]
    precisions = [points[0].precision] + [p.precision for p in points]
    ax.plot(recalls, precisions, drawstyle="steps-pre", color="C0", label=f"PR curve, AP {ap:.3f}")
    ax.plot(recalls[1:], precisions[1:], "o", color="C0", markersize=3)
    base = data.positives / len(data.labels)
    ax.axhline(base, linestyle=":", color="grey", label=f"positive share {base:.3f}")
    _mark_policy(ax, operating_point(data), data.left_out_positives > 0)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(0.0, 1.03)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title(
        _text(
            f"{data.name}: precision-recall (AP {ap:.3f}), "
            f"{data.positives} pos / {data.negatives} neg\n{describe_sources(data)}"
        ),
        fontsize=9,
    )
    ax.legend(loc="best", fontsize=8)
    _save(figure, path)
    return ap


def _mark_policy(ax: Axes, point: OperatingPoint | None, fallbacks_missed: bool) -> None:
    if point is None:
        return
    if point.precision is None:
        ax.plot([], [], " ", label="current policy: flags none of these")
        return
    ax.plot(
        point.recall,
        point.precision,
        "o",
        color="C3",
        markersize=9,
        label=f"current policy: P {point.precision:.3f}, R {point.recall:.3f}",
    )
    if fallbacks_missed:
        ax.plot(
            point.report_recall,
            point.precision,
            "o",
            markerfacecolor="none",
            color="C3",
            markersize=9,
            label=f"with fallbacks as not flagged (the report): R {point.report_recall:.3f}",
        )


def plot_scores(data: Series, path: Path) -> None:
    """Histograms of the positives' and negatives' scores on 0-1, each as a share of its
    class, so a few hundred positives stay visible next to thousands of negatives."""
    figure = _figure()
    ax = figure.add_subplot()
    for wanted, name, colour in ((False, "negatives", "C0"), (True, "positives", "C3")):
        values = [s for s, y in zip(data.scores, data.labels, strict=True) if y is wanted]
        if values:
            ax.hist(
                values,
                bins=_BINS,
                weights=[1 / len(values)] * len(values),
                histtype="stepfilled",
                alpha=0.4,
                color=colour,
                edgecolor=colour,
                label=f"{name} (n={len(values)})",
            )
        else:
            ax.plot([], [], " ", label=f"{name}: none")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("highest category score" if data.name == OVERALL else "score")
    ax.set_ylabel("share of the class")
    ax.grid(alpha=0.3)
    ax.set_title(_text(f"{data.name}: score distribution\n{describe_sources(data)}"), fontsize=9)
    ax.legend(loc="best", fontsize=8)
    _save(figure, path)


@dataclass(frozen=True, slots=True)
class Plotted:
    """What the page says about one category's pictures."""

    name: str
    stem: str
    ap: float | None
    data: Series


def write_plots(
    report: dict[str, Any], samples: list[ScoredSample], directory: Path, dataset: str = ""
) -> list[str]:
    """Every PNG and ``report.html`` into ``directory``; returns the notes (categories
    skipped, fallbacks left out) that the page also shows."""
    require_matplotlib()
    directory.mkdir(parents=True, exist_ok=True)
    names = [OVERALL, *report.get("per_category", {})]
    stems = file_stems(names)
    plotted: list[Plotted] = []
    notes: list[str] = []
    for name in names:
        data = series(samples, name)
        if not data.positives:
            notes.append(
                f"{name}: no positives among its {len(data.labels)} scored labelled verdicts "
                f"({describe_sources(data)}): no curve"
            )
            continue
        ap = plot_pr(data, directory / f"pr-{stems[name]}.png")
        plot_scores(data, directory / f"scores-{stems[name]}.png")
        plotted.append(Plotted(name, stems[name], ap, data))
    (directory / "report.html").write_text(
        render_html(report, plotted, notes, dataset), encoding="utf-8"
    )
    return notes


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return html.escape(f"{value:.3f}" if isinstance(value, float) else str(value))


def _table(report: dict[str, Any], plotted: list[Plotted]) -> list[str]:
    aps = {p.name: p for p in plotted}
    columns = ("precision", "recall", "f1", "fpr", "auprc")
    rows = [
        "<table>",
        "<tr><th>category</th><th>precision</th><th>recall</th><th>F1</th><th>FPR</th>"
        "<th>AUPRC</th><th>AP (plotted)</th><th>plotted pos / neg</th></tr>",
    ]
    entries = [(OVERALL, report["overall"]), *report.get("per_category", {}).items()]
    for name, entry in entries:
        shown = aps.get(name)
        counts = f"{shown.data.positives} / {shown.data.negatives}" if shown else "no curve"
        rows.append(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(f"<td>{_cell(entry.get(k))}</td>" for k in columns)
            + f"<td>{_cell(shown.ap if shown else None)}</td><td>{html.escape(counts)}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _summary(report: dict[str, Any]) -> list[str]:
    shares = ", ".join(f"{k} {v:.1%}" for k, v in report.get("decided_by", {}).items())
    rb = report.get("rules_block", {})
    llm = report.get("llm")
    stage = "on" if llm else "off (rules only)" if llm is False else "unknown"
    lines = [
        f"messages: {report.get('messages')}, dead letters: {report.get('dead_letters')}",
        f"LLM stage: {stage}",
        f"decided by: {shares}",
        f"fallback verdicts (not classified, left out of the curves): {report.get('fallbacks')}",
        f"rules block decisions: {rb.get('count')} ({rb.get('judged')} with labels), "
        f"precision {_cell(rb.get('precision'))}",
        f"LLM calls per 1,000 messages: {report.get('llm_calls_per_1000', 0.0):.1f}; "
        f"cost per 1,000: ${report.get('cost_usd_per_1000', 0.0):.4f}",
    ]
    return [f"<li>{html.escape(line)}</li>" for line in lines]


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em}"
    "td{text-align:right}td:first-child{text-align:left}"
    "figure{display:inline-block;margin:1em 1em 0 0}img{width:480px}"
)


_EXPLAIN = (
    "<p>AUPRC: as the report computes it, on LLM and cache scores only (none in a "
    "rules-only run). AP (plotted): the curve's, on every scored verdict: rules verdicts "
    "score 1.0 for the category of the rule that decided and 0 elsewhere (0 everywhere "
    "for a rule without a category, such as spam); fallback verdicts are left out. "
    "The filled marker is the current policy on the plotted verdicts; the hollow one "
    "counts the fallbacks as not flagged, as the table does.</p>"
)


def render_html(
    report: dict[str, Any], plotted: list[Plotted], notes: list[str], dataset: str = ""
) -> str:
    """A self-contained page: the report's numbers, the notes, the pictures referenced by
    relative paths (the directory can be moved or served as it is). Everything that comes
    from the data is escaped."""
    title = f"eval {dataset}".strip()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<ul>",
        *_summary(report),
        "</ul>",
        *_table(report, plotted),
        _EXPLAIN,
    ]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    for entry in plotted:
        name = html.escape(entry.name)
        parts += [
            f"<h2>{name}</h2>",
            f"<p>{html.escape(describe_sources(entry.data))}</p>",
            *(
                f'<figure><img src="{html.escape(kind)}-{html.escape(entry.stem)}.png" '
                f'alt="{name}: {alt}"></figure>'
                for kind, alt in (("pr", "precision-recall curve"), ("scores", "scores"))
            ),
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
