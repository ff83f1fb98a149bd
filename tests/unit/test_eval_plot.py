"""``eval --plot``: the curve points, real PNG files, an escaped page, and no matplotlib
import unless asked for."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from worker import _eval_plot as ep
from worker.__main__ import main
from worker.evaluate import ScoredSample, evaluate, evaluate_samples, load
from worker.models import Source

from ..conftest import DATASET, ROOT

HOSTILE = '<script>alert("x")</script>&/../evil $x^$'


def sample(
    score: float, label: bool | None, decided: bool, source: Source = Source.LLM, name: str = "hate"
) -> ScoredSample:
    return ScoredSample(
        source=source,
        scores={name: score, "sexual": 0.0},
        decided={name: decided, "sexual": False},
        flagged=decided,
        labels={name: label, "sexual": False},
        any_label=label,
    )


# scores, labels and decisions worked out by hand below
HAND = [
    sample(0.9, True, True),
    sample(0.8, False, True),
    sample(0.8, True, False),
    sample(0.4, False, False),
    sample(0.1, True, False),
    sample(0.0, True, False, Source.FALLBACK),  # not a prediction: left out
    sample(0.7, None, True),  # unlabelled: left out
    sample(1.0, True, True, Source.RULES),
]


def test_pr_curve_points_by_hand():
    data = ep.series(HAND, "hate")
    assert data.scores == [0.9, 0.8, 0.8, 0.4, 0.1, 1.0]
    assert (data.positives, data.negatives, data.left_out, data.left_out_positives) == (4, 2, 1, 1)
    points = ep.pr_curve(data.scores, data.labels)
    # >= 1.0: 1 tp; >= 0.9: 2 tp; >= 0.8 (tie: one point): 3 tp 1 fp; >= 0.4: 3 tp 2 fp; all
    expected = [(1.0, 1, 1 / 4), (0.9, 1, 2 / 4), (0.8, 3 / 4, 3 / 4), (0.4, 3 / 5, 3 / 4)]
    expected.append((0.1, 4 / 6, 1))
    assert [(p.threshold, p.precision, p.recall) for p in points] == [
        pytest.approx(e) for e in expected
    ]
    assert ep.pr_curve([0.5, 0.2], [False, False]) == []


def test_operating_point_is_the_pipelines_decisions():
    point = ep.operating_point(ep.series(HAND, "hate"))
    assert point is not None
    # flagged: 0.9 (pos), 0.8 (neg), rules 1.0 (pos) -> P 2/3; 2 of 4 plotted positives
    assert (point.precision, point.recall) == pytest.approx((2 / 3, 2 / 4))
    assert point.report_recall == pytest.approx(2 / 5)  # the fallback positive counted as missed
    none = ep.operating_point(ep.series([sample(0.3, True, False)], "hate"))
    assert none is not None and none.precision is None and none.recall == 0


def test_overall_uses_the_highest_score_and_says_whose_scores():
    data = ep.series(HAND, ep.OVERALL)
    assert data.scores == [0.9, 0.8, 0.8, 0.4, 0.1, 1.0]
    assert data.sources == {"llm": 5, "rules": 1}
    text = ep.describe_sources(data)
    assert "llm 5" in text and "rules 1" in text and "1 fallback verdicts left out" in text


def test_file_names_are_safe_and_distinct():
    assert ep.safe_name("hate/threatening") == "hate-threatening"
    assert ep.safe_name("../../etc/passwd") == "etc-passwd"
    assert ep.safe_name("<>") == "category"
    assert ep.file_stems(["a/b", "a-b", "a b"]) == {"a/b": "a-b", "a-b": "a-b-2", "a b": "a-b-3"}


def _report(category: str) -> dict:
    row = {"precision": 0.667, "recall": 0.5, "f1": 0.571, "fpr": 0.25, "auprc": 0.8123}
    return {
        "messages": 8,
        "dead_letters": 0,
        "overall": dict(row),
        "per_category": {category: dict(row), "sexual": {**row, "auprc": None}},
        "rules_block": {"count": 1, "judged": 1, "precision": 1.0},
        "decided_by": {"rules": 0.125, "cache": 0.0, "llm": 0.75, "fallback": 0.125},
        "llm_calls_per_1000": 125.0,
        "cost_usd_per_1000": 0.0123,
        "fallbacks": 1,
        "llm": True,
    }


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_write_plots_makes_real_pngs_and_an_escaped_page(tmp_path):
    samples = [sample(s.scores["hate"], s.labels["hate"], s.flagged, s.source, HOSTILE)
               for s in HAND]  # fmt: skip
    notes = ep.write_plots(_report(HOSTILE), samples, tmp_path, dataset="set<1>&.csv")
    stem = ep.safe_name(HOSTILE)
    assert "/" not in stem and "<" not in stem and ".." not in stem
    for name in ("overall", stem):
        for kind in ("pr", "scores"):
            path = tmp_path / f"{kind}-{name}.png"
            assert _png_size(path) == (640, 480)
            assert path.stat().st_size > 10_000  # axes, text and curves, not a blank image
    from matplotlib.image import imread

    pixels = imread(tmp_path / f"pr-{stem}.png")
    assert pixels.shape[:2] == (480, 640) and pixels.std() > 0.05  # not one flat colour
    # "sexual" has no positives: skipped, with a note
    assert not (tmp_path / "pr-sexual.png").exists()
    assert any(n.startswith("sexual: no positives") for n in notes)
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "set<1>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;/../evil $x^$" in page
    assert "set&lt;1&gt;&amp;.csv" in page
    for number in ("0.667", "0.500", "0.571", "0.250", "0.812", "$0.0123", "llm 75.0%"):
        assert number in page
    assert f'src="pr-{stem}.png"' in page and 'src="scores-overall.png"' in page
    assert "sexual: no positives" in page and "left out" in page
    plotted = ep.series(samples, HOSTILE)
    ap = ep.average_precision(list(zip(plotted.scores, plotted.labels, strict=True)))
    assert f"{ap:.3f}" in page  # the plotted AP in the table


def test_the_report_is_unchanged_and_the_points_match_it(pipeline_without_llm):
    samples = load(DATASET)[:300]
    evaluation = evaluate_samples(pipeline_without_llm, samples)
    again = evaluate(pipeline_without_llm, samples)
    assert {k: v for k, v in evaluation.report.items() if k != "latency_ms"} == {
        k: v for k, v in again.items() if k != "latency_ms"
    }
    json.dumps(evaluation.report)  # nothing per-sample in it
    assert len(evaluation.samples) == 300
    assert {s.source for s in evaluation.samples} <= {Source.RULES, Source.FALLBACK}
    rows = [evaluation.report["overall"], evaluation.report["per_category"]["hate"]]
    for name, row in zip((ep.OVERALL, "hate"), rows, strict=True):
        point = ep.operating_point(ep.series(evaluation.samples, name))
        assert point is not None
        assert (point.precision, point.report_recall) == pytest.approx(
            (row["precision"], row["recall"])
        )


def test_without_matplotlib_plot_exits_2_before_running(tmp_path, monkeypatch, capsys):
    data = tmp_path / "set.csv"
    data.write_text("text,label\nhello,0\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ep.PlotUnavailable, match=r"moderation-worker\[plot\]"):
        ep.require_matplotlib()
    assert main(["eval", str(data), "--rules-only", "--plot", str(tmp_path / "out")]) == 2
    err = capsys.readouterr()
    assert "pip install 'moderation-worker[plot]'" in err.err and err.out == ""
    assert not (tmp_path / "out").exists()


def test_plot_and_batch_size_do_not_combine(tmp_path, capsys):
    data = tmp_path / "set.csv"
    data.write_text("text,label\nhello,0\n")
    assert main(["eval", str(data), "--batch-size", "1,8", "--plot", str(tmp_path)]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_matplotlib_is_not_imported_unless_plotting():
    code = (
        "import sys, worker.__main__, worker.evaluate, worker._eval_plot, worker.pipeline\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
