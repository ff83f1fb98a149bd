"""The embedded command: the README's first command, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..conftest import ROOT
from ._cli import run_cli


def run(args: list[str], stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args, stdin, **env)


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
    stdin = '{"id": "a", "text": "what a stupid take"}\n{"id": "b", "text": "hello"}\n'
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


def test_moderate_format_table_and_summary_on_the_example_file():
    """A row per input line that agrees with the JSON verdicts, then the summary."""
    import re
    from collections import Counter

    verdicts = [
        json.loads(line)
        for line in run(["moderate", "examples/messages.jsonl"]).stdout.splitlines()
    ]
    table = run(["moderate", "examples/messages.jsonl", "--format", "table"], COLUMNS="120")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["id", "action", "source", "category", "reason"]
    body = lines[2 : lines.index("")]
    cells = {row[0]: row for row in (re.split(r"\s{2,}", line.strip()) for line in body)}
    assert list(cells) == [v["id"] for v in verdicts] + ["line 9", "line 10"]  # input order
    for v in verdicts:
        assert cells[v["id"]][1:3] == [v["action"], v["source"]]
    assert cells["m2"][3:] == [
        "harassment/threatening",
        "Direct threat of violence against a person.",
    ]
    assert cells["m1"][3] == "-" and cells["m1"][4].startswith("not classified: LLM stage is off")
    assert cells["line 10"] == ["line 10", "dead letter", "-", "-", "invalid_json"]
    assert cells["line 9"][1:] == ["dead letter", "-", "-", "invalid_fields"]
    for text in ("Congrats on the launch", "k1ll", "BITCOIN", "not json at all"):
        assert text not in table.stdout  # ids only, never the message text
    assert '"dead_letter"' not in table.stderr  # shown as rows instead

    actions = Counter(v["action"] for v in verdicts)
    fallback = sum(v["source"] == "fallback" for v in verdicts)
    languages = Counter(v["language"] or "-" for v in verdicts)
    summary = run(["moderate", "examples/messages.jsonl", "--format", "summary"])
    assert summary.returncode == 0, summary.stderr
    expected = [
        f"10 messages: {len(verdicts)} verdicts, 2 dead letters (invalid_fields 1, invalid_json 1)",
        "actions: "
        + ", ".join(
            f"{a} {actions[a]}" for a in ("block", "review", "flag", "allow") if actions[a]
        ),
        f"sources: rules {len(verdicts) - fallback}, fallback {fallback}",
        "languages: " + ", ".join(f"{code} {n}" for code, n in languages.most_common(8)),
        "LLM: 0 calls, 0 prompt + 0 completion tokens, $0.0000",
    ]
    out = summary.stdout.splitlines()
    assert out[:5] == expected and re.fullmatch(r"wall time: \d+\.\d\d s from launch", out[5])
    assert out[6] == (
        f"{fallback} of 10 left to the fallback (no LLM configured): start a local model with "
        "docker/llama-server.sh serve, then export the lines of docker/llama-server.sh env"
    )
    assert len(out) == 7 and fallback > 0
    tail = lines[lines.index("") + 1 :]  # the table's closing summary: the same, bar the time
    assert tail[:5] == out[:5] and tail[6:] == out[6:] and len(tail) == len(out)


def test_moderate_summary_with_the_llm_counts_calls_and_names_no_fallback(fake_llm):
    stdin = "".join(json.dumps({"id": str(n), "text": f"hello {n}"}) + "\n" for n in range(6))
    result = run(
        ["moderate", "--format", "summary"],
        stdin=stdin,
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="k",
        TIKTOKEN_CACHE_DIR=os.environ["TIKTOKEN_CACHE_DIR"],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "6 messages: 6 verdicts, 0 dead letters"
    assert lines[2] == "sources: llm 6"
    assert lines[3].startswith("languages: ")
    calls = int(lines[4].split()[1])
    assert 1 <= calls == round(fake_llm.state.requests) and "prompt +" in lines[4]
    assert not any("fallback" in line or "llama-server" in line for line in lines)


def test_moderate_on_a_terminal_prints_a_table_and_into_a_pipe_json_lines(tmp_path):
    """No --format: a real pseudo-terminal on stdout gets the table, a pipe gets JSON."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MODERATION_"))}
    env.pop("COLUMNS", None)  # the terminal's own size decides
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with (tmp_path / "stderr").open("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "worker", "moderate", "examples/messages.jsonl"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=stderr,
            env=env,
        )
        os.close(follower)
        chunks, deadline = [], time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([leader], [], [], 1.0)
                if not ready:
                    continue
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(leader)
        assert child.wait(timeout=30) == 0
        stderr.seek(0)
        errors = stderr.read()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r\n", "\n")
    lines = screen.splitlines()
    assert lines[0].split() == ["id", "action", "source", "category", "reason"], screen
    row = next(line for line in lines if line.startswith("m2 "))
    assert row.split()[:4] == ["m2", "block", "rules", "harassment/threatening"]
    assert "Direct threat of violence against a person." in row  # 120 columns: room for it
    assert any(line.split()[:4] == ["line", "10", "dead", "letter"] for line in lines)
    assert "10 messages: 8 verdicts, 2 dead letters" in screen
    assert "docker/llama-server.sh serve" in screen
    assert "{" not in screen and "k1ll" not in screen  # no JSON, no message text
    assert "LLM stage is OFF" in errors

    piped = run(["moderate", "examples/messages.jsonl"])
    verdicts = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [v["id"] for v in verdicts] == [f"m{n}" for n in range(1, 9)]
    assert piped.stderr.splitlines()[-1].startswith(
        "moderate: 8 verdicts, 2 dead letters; LLM 0 calls"
    )


def test_only_the_table_needs_rich():
    """rich is imported where the table is printed: with it unimportable (None in
    sys.modules, so structlog, which loads it when installed, does without it too),
    jsonl and summary still work and only the table fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MODERATION_"))}

    def without_rich(*args: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys; sys.modules['rich'] = None; from worker.__main__ import main; "
            f"sys.exit(main(['moderate', 'examples/messages.jsonl', *{list(args)!r}]))"
        )
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    jsonl = without_rich()
    assert jsonl.returncode == 0, jsonl.stderr
    assert [json.loads(line)["id"] for line in jsonl.stdout.splitlines()] == [
        f"m{n}" for n in range(1, 9)
    ]
    summary = without_rich("--format", "summary")
    assert summary.returncode == 0 and summary.stdout.startswith("10 messages: 8 verdicts")
    table = without_rich("--format", "table")
    assert table.returncode != 0 and "rich" in table.stderr  # the block is real


def test_warm_fills_the_cache_directory_and_a_second_run_reuses_it(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {id: t.kys, words: [kys], action: block, category: self-harm}\n")
    cache = tmp_path / "cache"
    first = run_cli(["warm"], MODERATION_POLICY=str(policy), MODERATION_CACHE_DIR=str(cache))
    assert first.returncode == 0, first.stderr
    files = sorted(p.name for p in cache.glob("*.bin"))
    assert any(name.startswith("hyperscan-") for name in files), files
    assert f"{len(files)} files" in first.stdout
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.bin")}
    again = run_cli(["warm"], MODERATION_POLICY=str(policy), MODERATION_CACHE_DIR=str(cache))
    assert again.returncode == 0, again.stderr
    # read, not rebuilt
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.bin")} == stamps
    off = run_cli(["warm"], MODERATION_POLICY=str(policy), MODERATION_CACHE_DIR="")
    assert off.returncode == 1 and "MODERATION_CACHE_DIR is empty" in off.stderr
