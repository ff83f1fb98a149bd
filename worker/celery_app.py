"""The Celery application: tuned defaults so plain ``celery -A worker worker`` is right.

The hot path is the plain-JSON queue ``moderation.requests``, read by the consumer
bootsteps in ``worker.steps``; the task ``moderation.moderate`` (``worker.tasks``) is
the Celery way in for Python producers, through the same batched pipeline. Celery
supplies the process: connection handling and reconnects, signals and warm shutdown,
remote control (``celery inspect``) and events (Flower).
"""

from __future__ import annotations

from typing import Any

import celery.worker.consumer
from celery import Celery, Task, signals

from worker._logging import configure
from worker._tls import broker_ssl, redis_ssl
from worker.settings import Settings, get_settings
from worker.steps import STEPS
from worker.tasks import NAME, QUEUE, register


class Consumer(celery.worker.consumer.Consumer):
    """Celery's consumer without native delayed delivery, which it adds whenever a task
    queue is a quorum queue: a setup that connects to every broker URL in turn at each
    start (a node down costs its retries) for countdown/ETA tasks, which nothing here
    sends. Our own steps (``worker.steps``) are added to it as to Celery's."""

    class Blueprint(celery.worker.consumer.Consumer.Blueprint):
        default_steps = tuple(
            step
            for step in celery.worker.consumer.Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        )


def install(app: Celery, settings: Settings) -> Task:
    """Configure ``app`` as a moderation worker: settings, steps and the task."""
    app.conf.update(
        moderation_settings=settings,
        result_backend=settings.result_backend,
        # Tasks only wait for their verdicts (the pipeline's own threads do the work),
        # so a thread pool: each waiting task costs a thread, not a process.
        worker_pool="threads",
        worker_concurrency=settings.task_concurrency,
        # Quorum, as every queue the worker declares: a durable classic queue lives on
        # one node, and with that node down its redeclaration fails (404), which ends a
        # worker that reconnected to another node. Without ``DelayedDelivery`` (see
        # ``Consumer``): its 28 exchanges and queues serve ETA tasks, which nothing sends.
        task_default_queue=QUEUE,
        task_default_queue_type="quorum",
        worker_consumer="worker.celery_app:Consumer",
        task_routes={NAME: {"queue": QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_extended=False,
        # Events on, so Flower and `celery events` see the workers.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_use_ssl=broker_ssl(settings),
        redis_backend_use_ssl=redis_ssl(settings, settings.result_backend) or None,
    )
    for step in STEPS:
        app.steps["consumer"].add(step)
    return register(app)


def create_app(settings: Settings) -> Celery:
    app = Celery("worker", broker=settings.broker_url)
    install(app, settings)
    return app


settings = get_settings()
app = create_app(settings)
moderate = app.tasks[NAME]


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure(settings.log_level)
