"""Shared fixtures: a private RabbitMQ vhost, the simulated LLM, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATASET = SHARED / "datasets" / "openai-moderation-samples-1680.jsonl.gz"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))

from worker.client import ModerationClient  # noqa: E402
from worker.pipeline import Pipeline, build_pipeline  # noqa: E402
from worker.settings import DEFAULT_PRICES, Settings  # noqa: E402
from worker.testing.fake_llm import FakeLLM, FakeLLMState  # noqa: E402

RABBIT = "127.0.0.1:5672"
# the simulator is not OpenAI's endpoint, so nothing is priced unless prices are given
GPT_4O_MINI_PRICES = {"gpt-4o-mini": DEFAULT_PRICES["gpt-4o-mini"]}


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A vhost of our own, so tests never see anyone else's queues (or leave theirs)."""
    name = f"moderation-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def broker_url(vhost: str) -> str:
    return f"amqp://guest:guest@{RABBIT}/{vhost}"


@pytest.fixture(scope="session")
def _fake_llm_server() -> Iterator[FakeLLM]:
    with FakeLLM(timing="instant") as server:
        yield server


@pytest.fixture
def fake_llm(_fake_llm_server: FakeLLM) -> FakeLLM:
    """The simulated LLM with faults and settings reset for each test."""
    state = _fake_llm_server.state
    fresh = FakeLLMState()
    with state.lock:
        state.faults.clear()
        state.fault_rates.clear()
        for name in (
            "ttft_ms",
            "ttft_sigma",
            "prefill_ms_per_1k",
            "token_ms",
            "rpm",
            "tpm",
            "slots",
            "context_tokens",
            "error_style",
            "gullible",
            "timeout_s",
            "stall_s",
        ):
            setattr(state, name, getattr(fresh, name))
        state.timing = "instant"  # tests that want a model's timing set it
        state.latency_ms = state.jitter_ms = 0.0
        state.requests = state.items = state.max_concurrent = 0
        state.prompt_tokens = state.completion_tokens = 0
        state.by_fault.clear()
        state.asked.clear()
    return _fake_llm_server


@pytest.fixture
def pipeline_without_llm() -> Pipeline:
    return build_pipeline(Settings(openai_base_url=None, openai_api_key=None))


@pytest.fixture
def make_pipeline(fake_llm: FakeLLM) -> Callable[..., Pipeline]:
    """An in-process pipeline talking to the simulated LLM over real HTTP."""

    def make(**overrides: object) -> Pipeline:
        options: dict[str, object] = {
            "openai_base_url": fake_llm.base_url,
            "openai_api_key": "test-key",
            "llm_deadline_s": 5.0,
            "breaker_reset_s": 0.5,
            "prices": GPT_4O_MINI_PRICES,
            **overrides,
        }
        return build_pipeline(Settings(**options))  # type: ignore[arg-type]

    return make


@pytest.fixture
def client(broker_url: str) -> Iterator[ModerationClient]:
    with ModerationClient(broker_url, Settings(broker_url=broker_url)) as c:
        _purge(c)
        yield c


def _purge(client: ModerationClient) -> None:
    with client._connection.channel() as channel:
        for name in ("moderation.requests", "moderation.dead", "moderation.verdicts.unrouted"):
            channel.queue_purge(name)


class WorkerProcess:
    """``celery -A worker worker`` as a real subprocess, as a pod would run it."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.name = f"test-{uuid.uuid4().hex[:6]}@%h"
        self.health = tmp / f"{uuid.uuid4().hex[:6]}.alive"
        self.log = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> WorkerProcess:
        env = {**self.env, "MODERATION_HEALTH_FILE": str(self.health)}
        self.health.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-n",
                self.name,
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.health.exists():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready: {self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def worker_env(broker_url: str, fake_llm: FakeLLM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODERATION_", "OPENAI_"))}
    env.update(
        MODERATION_BROKER_URL=broker_url,
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="test-key",
        MODERATION_METRICS_PORT="0",
        MODERATION_BATCH_WAIT_MS="20",
        MODERATION_LLM_DEADLINE_S="10",
        MODERATION_BREAKER_RESET_S="1",
        MODERATION_PRICES=json.dumps(GPT_4O_MINI_PRICES),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path, client: ModerationClient
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; all are stopped (SIGTERM) after the test."""
    started: list[WorkerProcess] = []

    def start(wait: bool = True, **env: str) -> WorkerProcess:
        process = WorkerProcess({**worker_env, **env}, tmp_path)
        started.append(process)
        return process.start(wait=wait)

    yield start
    for process in started:
        process.stop()


def pytest_report_header() -> list[str]:
    found = "found" if DATASET.exists() else "MISSING"
    return [f"rabbitmq: {RABBIT}; dataset: {DATASET} ({found})"]
