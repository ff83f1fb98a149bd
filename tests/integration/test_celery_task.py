"""``moderation.moderate`` as Celery users call it: pytest-celery's ``celery_app`` and
``celery_worker`` (an in-process worker) on the real RabbitMQ, results in the real Redis,
verdicts from the same batched pipeline as the plain-JSON queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain

from worker.celery_app import install
from worker.settings import Settings
from worker.tasks import NAME, QUEUE, RequestRejected
from worker.testing.fake_llm import FakeLLM

RESULTS = "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="session")
def celery_config(broker_url: str) -> dict[str, Any]:
    return {"broker_url": broker_url, "result_backend": RESULTS}


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    # concurrency: tasks waiting for their verdicts at once (the pipeline batches them);
    # no ping check: it needs Celery's test task registered, which this app does not have
    return {"concurrency": 32, "perform_ping_check": False, "queues": [QUEUE]}


@pytest.fixture
def celery_app(
    celery_app: Celery, broker_url: str, fake_llm: FakeLLM, tmp_path: Path
) -> Iterator[Celery]:
    """pytest-celery's app, made a moderation worker the way ``worker.celery_app`` is."""
    settings = Settings(
        broker_url=broker_url,
        openai_base_url=fake_llm.base_url,
        openai_api_key="test-key",
        metrics_port=0,
        result_backend=RESULTS,
        batch_wait_ms=50,
        health_file=tmp_path / "alive",
    )
    install(celery_app, settings)

    @celery_app.task(name="tests.action_of")
    def action_of(verdict: dict[str, Any]) -> str:
        return str(verdict["action"])

    yield celery_app


def test_delay_returns_the_published_verdict(celery_app, celery_worker, client):
    with client.subscribe() as verdicts:
        result = celery_app.tasks[NAME].delay({"id": "t-1", "text": "see you at the game"})
        verdict = result.get(timeout=30)
        published = verdicts.get(timeout=10)
    assert verdict["id"] == "t-1" and verdict["action"] in {"allow", "flag", "review", "block"}
    assert verdict == published.model_dump(mode="json")  # the same verdict, both ways


def test_tasks_share_batched_llm_calls(celery_app, celery_worker, fake_llm):
    # a model's timing: with instant replies each task could find the LLM idle and go
    # alone, and whether any two share a call would be a race
    fake_llm.state.control({"timing": "real", "ttft_ms": 300})
    moderate = celery_app.tasks[NAME]
    results = [
        moderate.delay({"id": f"b-{n}", "text": f"ordinary message number {n}"}) for n in range(24)
    ]
    verdicts = [r.get(timeout=60) for r in results]
    assert [v["id"] for v in verdicts] == [f"b-{n}" for n in range(24)]
    assert all(v["source"] == "llm" for v in verdicts)
    assert 0 < fake_llm.state.requests < 24  # batched, not one call per task


def test_send_task_by_name_and_in_a_chain(celery_app, celery_worker):
    by_name = celery_app.send_task(NAME, args=[{"id": "n-1", "text": "hello there"}], queue=QUEUE)
    assert by_name.get(timeout=30)["id"] == "n-1"
    action = chain(
        celery_app.tasks[NAME].s({"id": "c-1", "text": "I will kill you"}),
        celery_app.tasks["tests.action_of"].s(),
    ).delay()
    assert action.get(timeout=30) == "block"


def test_bad_input_fails_the_task_with_the_reason_and_dead_letters_it(
    celery_app, celery_worker, client
):
    result = celery_app.tasks[NAME].delay({"id": "bad-1", "txet": "no text field"})
    with pytest.raises(RequestRejected) as raised:
        result.get(timeout=30)
    assert raised.value.reason == "invalid_fields"
    dead = list(client.dead_letters(timeout=1.0))
    assert [d.reason for d in dead] == ["invalid_fields"]
    assert result.state == "FAILURE"
