"""The embedded command: the README's first command, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..conftest import ROOT


def run(args: list[str], stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MODERATION_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
    )


def test_moderate_the_example_file_without_llm():
    result = run(["moderate", "examples/messages.jsonl"])
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    by_id = {v["id"]: v for v in verdicts}
    assert by_id["m2"]["action"] == "block" and by_id["m2"]["source"] == "rules"
    assert by_id["m1"]["source"] == "fallback" and by_id["m1"]["action"] == "review"
    assert "LLM stage is OFF" in result.stderr
    assert '"dead_letter": "invalid_json"' in result.stderr
    lines = [line for line in (ROOT / "examples/messages.jsonl").read_text().splitlines() if line]
    dead = result.stderr.count('"dead_letter"')
    assert len(verdicts) + dead == len(lines)


def test_moderate_reads_stdin_and_uses_the_llm_when_configured(fake_llm):
    stdin = '{"id": "a", "text": "what an idiot"}\n{"id": "b", "text": "hello"}\n'
    result = run(
        ["moderate"],
        stdin=stdin,
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="k",
        TIKTOKEN_CACHE_DIR=os.environ["TIKTOKEN_CACHE_DIR"],
    )
    assert result.returncode == 0, result.stderr
    a, b = (json.loads(line) for line in result.stdout.splitlines())
    assert (a["source"], b["source"]) == ("llm", "llm")
    assert a["action"] != "allow" and b["action"] == "allow"
    assert "LLM stage is OFF" not in result.stderr


def test_fallback_action_is_configurable():
    result = run(
        ["moderate", "-"], stdin='{"id": "a", "text": "hmm"}\n', MODERATION_FALLBACK_ACTION="allow"
    )
    assert json.loads(result.stdout)["action"] == "allow"


def test_logs_do_not_contain_message_text(fake_llm):
    secret = "my very private sentence"
    result = run(
        ["moderate"],
        stdin=json.dumps({"id": "a", "text": secret}) + "\n",
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="sk-secret-key",
        MODERATION_LOG_LEVEL="DEBUG",
    )
    assert secret not in result.stderr and "sk-secret-key" not in result.stderr


def test_moderate_runs_batches_concurrently_at_a_models_speed(fake_llm, tmp_path):
    """400 texts at gpt-4o-mini's timing: many calls at once, not one batch after another."""
    fake_llm.state.control({"timing": "real", "ttft_ms": 600, "token_ms": 15})
    lines = "".join(
        json.dumps({"id": str(n), "text": f"ordinary message {n}"}) + "\n" for n in range(400)
    )
    path = tmp_path / "in.jsonl"
    path.write_text(lines)
    result = run(
        ["moderate", str(path)],
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="k",
        TIKTOKEN_CACHE_DIR=os.environ["TIKTOKEN_CACHE_DIR"],
    )
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["id"] for v in verdicts] == [str(n) for n in range(400)]  # input order
    assert {v["source"] for v in verdicts} == {"llm"}
    assert fake_llm.state.max_concurrent >= 4  # calls overlapped
    assert fake_llm.state.requests < 400 / 4  # and were batched


def test_eval_compares_batch_sizes(fake_llm, tmp_path):
    from ..conftest import DATASET

    report = tmp_path / "sweep.json"
    result = run(
        ["eval", str(DATASET), "--batch-size", "1,8", "--limit", "40", "--json", str(report)],
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="k",
        TIKTOKEN_CACHE_DIR=os.environ["TIKTOKEN_CACHE_DIR"],
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())
    assert [r["batch_size"] for r in rows] == [1, 8]
    one, eight = rows
    assert one["llm_calls_per_1000"] > 5 * eight["llm_calls_per_1000"]
    assert one["overall"]["f1"] == eight["overall"]["f1"]  # the simulator does not degrade
    assert "call p50" in result.stdout and one["llm_call_ms"]["calls"] >= 30
