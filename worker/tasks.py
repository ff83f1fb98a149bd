"""``moderation.moderate``: the Celery way in, for Python producers.

``moderate.delay(request)``, ``app.send_task("moderation.moderate", args=[request],
queue="moderation.tasks")`` or a step in a chain: one argument, the request dict of the
JSON contract. In a moderation worker the task hands the request to the same batched
pipeline as the plain-JSON queue (``worker._intake``: rules, cache, micro-batched LLM
calls; not one LLM call per task), waits for its verdict to be published on the
verdicts exchange as always, and returns that verdict as a dict (the task's result when
``MODERATION_RESULT_BACKEND`` is set). A request that is dead-lettered fails the task
with ``RequestRejected`` (the dead letter's reason and detail); the dead letter goes to
``moderation.dead`` as usual.

Run eagerly or called directly (no worker in this process), it moderates in-process
with the embedded pipeline.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import orjson
from celery import Celery, Task

from worker.settings import settings_of_app

NAME = "moderation.moderate"
QUEUE = "moderation.tasks"
_WAIT_S = 300.0  # for a verdict; far beyond any LLM deadline, short of forever


class RequestRejected(Exception):
    """The request was dead-lettered (invalid, too large, ...): nothing to moderate."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _moderate(task: Task, request: Any) -> dict[str, Any]:
    from worker.pipeline import DeadLetter

    intake = getattr(task.app, "moderation_intake", None)
    if intake is None:
        if task.request.is_eager or task.request.called_directly:
            outcome = _embedded(task.app).run([_envelope(request)])[0]
        else:  # a worker between connections: its consumer is restarting
            raise task.retry(countdown=1, max_retries=30)
    else:
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        future = intake.submit_task(request, redelivered=redelivered)
        try:
            outcome = future.result(timeout=_WAIT_S)
        except FutureTimeout:
            raise TimeoutError(f"no verdict within {_WAIT_S:.0f} s") from None
        except RuntimeError as exc:  # its verdict was not confirmed: ask again
            raise task.retry(exc=exc, countdown=1, max_retries=5) from exc
    if isinstance(outcome, DeadLetter):
        raise RequestRejected(outcome.reason.value, outcome.detail)
    result: dict[str, Any] = orjson.loads(outcome.model_dump_json())  # as published
    return result


def register(app: Celery) -> Task:
    """``moderation.moderate`` on ``app`` (``task_routes`` sends it to ``QUEUE``)."""
    task: Task = app.task(
        name=NAME, bind=True, acks_late=True, reject_on_worker_lost=True, throws=(RequestRejected,)
    )(_moderate)
    return task


def _envelope(request: Any) -> Any:
    from worker.validate import Envelope

    return Envelope(
        body=orjson.dumps(request),
        content_type="application/json",
        content_encoding="utf-8",
        redelivered=False,
        headers={},
    )


def _embedded(app: Celery) -> Any:
    """One embedded pipeline per app, built on first use (it compiles the policy)."""
    pipeline = getattr(app, "moderation_embedded", None)
    if pipeline is None:
        from worker.pipeline import build_pipeline

        pipeline = app.moderation_embedded = build_pipeline(settings_of_app(app))
    return pipeline
