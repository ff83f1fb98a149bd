"""``python -m worker eval --plot DIR`` in a subprocess, as a user runs it: rules only and
with the simulated LLM."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import DATASET, ROOT
from ._cli import run_cli

pytest.importorskip("matplotlib")


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args, timeout=300, **env)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_rules_only_plots_what_the_rules_scored(tmp_path):
    out = tmp_path / "plots"
    # without the profanity rule set (whose flags touch every category), so that some
    # categories have no positive the rules scored
    policy = tmp_path / "policy.yaml"
    default = (ROOT / "worker" / "policies" / "default.yaml").read_text()
    policy.write_text(default + "\ndisable: ['profanity.*']\n")
    result = run(
        ["eval", str(DATASET), "--rules-only", "--limit", "300", "--plot", str(out)],
        MODERATION_POLICY=str(policy),
    )
    assert result.returncode == 0, result.stderr
    assert "ANY (overall)" in result.stdout  # the printed report as without --plot
    for name in ("pr-overall.png", "scores-overall.png", "pr-hate.png", "scores-hate.png"):
        assert _is_png(out / name), name
    assert not list(out.glob("*/*"))  # "hate/threatening" made no sub-directory
    page = (out / "report.html").read_text()
    assert "LLM stage: off (rules only)" in page and "scores from rules" in page
    assert "no positives" in page  # categories the rules never scored are skipped, said so
    assert "fallback verdicts left out" in page and "no positives" in result.stderr
    assert f"plots: {out / 'report.html'}" in result.stderr


def test_plots_with_the_simulated_llm(fake_llm, tmp_path):
    out = tmp_path / "plots"
    result = run(
        ["eval", str(DATASET), "--limit", "200", "--plot", str(out)],
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="k",
        TIKTOKEN_CACHE_DIR=os.environ["TIKTOKEN_CACHE_DIR"],
    )
    assert result.returncode == 0, result.stderr
    pngs = {p.name for p in out.glob("*.png")}
    assert {"pr-overall.png", "scores-overall.png", "pr-self-harm.png"} <= pngs
    assert all(_is_png(out / name) for name in pngs)
    page = (out / "report.html").read_text()
    assert "LLM stage: on" in page and "scores from llm" in page
    for name in sorted(pngs):
        assert f'src="{name}"' in page
