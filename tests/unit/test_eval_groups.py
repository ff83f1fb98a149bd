"""Evaluation per language and functionality, on Multilingual HateCheck's CSV format."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

from worker.evaluate import evaluate, load

from ..conftest import SHARED

HATECHECK = SHARED / "datasets" / "multilingual-hatecheck"
ROWS = [
    ("threat_dir_h", "Ich bringe dich um, du Schwuchtel.", "hateful"),
    ("slur_h", "Zu viele von denen hier.", "hateful"),
    ("counter_quote_nh", 'Wer "Ich bringe dich um" schreibt, wird gesperrt.', "non-hateful"),
    ("ident_neutral_nh", "Wir treffen uns morgen am Bahnhof.", "non-hateful"),
]


def _write(path: Path) -> None:
    with gzip.open(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mhc_case_id", "functionality", "test_case", "label_gold"])
        for n, (functionality, text, gold) in enumerate(ROWS):
            writer.writerow([f"german-{n}", functionality, text, gold])


def test_hatecheck_rows_load_with_their_language_and_functionality(tmp_path: Path):
    path = tmp_path / "german.csv.gz"
    _write(path)
    samples = load(path)
    assert [s.group for s in samples] == [r[0] for r in ROWS]
    assert {s.language for s in samples} == {"de"}
    assert [s.labels["hate"] for s in samples] == [True, True, False, False]


def test_the_report_counts_blocks_per_language_and_functionality(
    tmp_path: Path, pipeline_without_llm
):
    path = tmp_path / "german.csv.gz"
    _write(path)
    report = evaluate(pipeline_without_llm, load(path))
    german = report["by_language"]["de"]
    assert (german["hateful"], german["blocked_hateful"]) == (2, 1)
    assert (german["innocent"], german["blocked"]) == (2, 0)  # the quote is not blocked
    assert german["groups"]["threat_dir_h"]["block"] == 1
    assert german["groups"]["counter_quote_nh"]["block"] == 0


def test_eval_command_reports_each_shared_language(tmp_path: Path):
    files = sorted(HATECHECK.glob("*.csv.gz"))
    assert len(files) == 5, "the shared Multilingual HateCheck files"
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "worker", "eval", *map(str, files), "--rules-only"]
    result = subprocess.run(
        [*command, "--json", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    by_language = report["by_language"]
    assert sorted(by_language) == ["de", "es", "fr", "hi", "pt"]
    for code, entry in by_language.items():
        share = entry["blocked"] / entry["innocent"]
        print(f"{code}: non-hateful blocked {entry['blocked']}/{entry['innocent']} ({share:.2%})")
        assert share <= 0.01, code
        assert entry["blocked_hateful"] > 0, code  # the rules catch some in every language
        assert "counter_quote_nh" in entry["groups"]
    assert "per functionality" in result.stdout
