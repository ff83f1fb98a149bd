"""The Celery application: tuned defaults so plain ``celery -A worker worker`` is right.

There are no Celery tasks on the hot path: ``worker._consumer.ModerationConsumer`` reads
the producers' plain JSON directly. Celery supplies the process: connection handling and
reconnects, signals and warm shutdown, remote control (``celery inspect``) and events
(Flower).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from worker._consumer import ModerationConsumer
from worker._logging import configure
from worker.settings import get_settings

settings = get_settings()

app = Celery("worker", broker=settings.broker_url)
app.conf.update(
    # The pool runs no moderation work (our own thread pool does), so keep it minimal.
    worker_pool="solo",
    worker_concurrency=1,
    # Celery's own task queue, should anyone route tasks here. Classic on purpose: a
    # quorum task queue makes Celery set up 28 delayed-delivery queues for ETA tasks,
    # which nothing here uses. The moderation queues themselves are quorum queues.
    task_default_queue="moderation.tasks",
    task_default_queue_type="classic",
    # For any task that does run: ack after it finished, and requeue if the worker dies.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Events on, so Flower and `celery events` see the workers.
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
app.steps["consumer"].add(ModerationConsumer)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure(settings.log_level)
