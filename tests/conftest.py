"""Shared fixtures: a private RabbitMQ vhost, the simulated LLM, real worker processes,
the machine's Redis."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATASET = SHARED / "datasets" / "openai-moderation-samples-1680.jsonl.gz"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))

from worker.client import ModerationClient  # noqa: E402
from worker.pipeline import Pipeline, build_pipeline  # noqa: E402
from worker.settings import DEFAULT_PRICES, Settings  # noqa: E402
from worker.testing.amqp import WorkerLauncher, WorkerProcess, temporary_vhost  # noqa: E402
from worker.testing.fake_llm import FakeLLM, FakeLLMState  # noqa: E402
from worker.testing.redis_server import RedisServer  # noqa: E402
from worker.testing.redis_server import available as redis_server_available  # noqa: E402

RABBIT = "127.0.0.1:5672"
# the simulator is not OpenAI's endpoint, so nothing is priced unless prices are given
GPT_4O_MINI_PRICES = {"gpt-4o-mini": DEFAULT_PRICES["gpt-4o-mini"]}


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A vhost of our own, so tests never see anyone else's queues (or leave theirs)."""
    with temporary_vhost("moderation-test") as name:
        yield name


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
    """Start real worker processes (``start(wait=True, **env)``, each a
    ``WorkerProcess``); all are stopped (SIGTERM) after the test."""
    with WorkerLauncher(worker_env, tmp_path, cwd=ROOT) as launcher:
        yield launcher.start


def pytest_report_header() -> list[str]:
    found = "found" if DATASET.exists() else "MISSING"
    return [f"rabbitmq: {RABBIT}; dataset: {DATASET} ({found})"]


@pytest.fixture
def local_redis() -> Iterator[Any]:
    """A client of the Redis on the machine (127.0.0.1:6379); skips where there is none."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    yield client
    client.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own (``kill``, ``freeze``, ``start`` again)."""
    if not redis_server_available():
        pytest.skip("no redis-server on PATH")
    with RedisServer() as server:
        yield server


@pytest.fixture
def database_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own on the machine's server (dropped after)."""
    import uuid

    import psycopg

    admin_url = os.environ.get(
        "MODERATION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"moderation_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {admin_url}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
