"""The Celery glue: consumer bootsteps, each owning one resource.

Producers publish plain JSON, not Celery task messages, so the worker consumes
``moderation.requests`` with its own kombu consumer inside Celery's event loop (Celery
keeps the connection, reconnects, handles signals, remote control and events). The
steps, in start order (a consumer restart after a lost connection stops and starts
them again; ``shutdown`` runs once, at the end):

- ``Publishing``: the publisher thread and its confirm-mode connection;
- ``Metrics``: the Prometheus endpoint, once per process;
- ``Moderation``: the request consumers and the stages behind them (``worker._intake``);
- ``Health``: the liveness file, touched from the event loop once consuming (a stuck
  loop goes stale).

The settings come from ``app.conf.moderation_settings`` when the app carries them (an
app built by ``worker.celery_app.create_app``), else from the environment.
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer

from worker import metrics, topology
from worker._backlog import QueueDepth
from worker._intake import Intake
from worker._kombu_compat import connection_socket, raw_deliveries, worker_shutting_down
from worker._tls import broker_ssl
from worker.pipeline import build_pipeline
from worker.publish import Publisher
from worker.settings import Settings, settings_of_app

log = structlog.get_logger("worker.steps")


def settings_of(c: Any) -> Settings:
    return settings_of_app(c.app)


class Publishing(bootsteps.StartStopStep):
    """Verdicts and dead letters out, with confirms; outlives consumer restarts (its
    connection is its own)."""

    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        c.moderation_publisher = None

    def start(self, c: Any) -> None:
        if c.moderation_publisher is None:
            c.moderation_publisher = Publisher(settings_of(c)).start()

    def shutdown(self, c: Any) -> None:
        if c.moderation_publisher is not None:
            c.moderation_publisher.stop(timeout=5)
            c.moderation_publisher = None


class Metrics(bootsteps.StartStopStep):
    """``/metrics`` on ``MODERATION_METRICS_PORT``, started once per process."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.serving = False

    def start(self, c: Any) -> None:
        if not self.serving:
            settings = settings_of(c)
            metrics.serve(settings.metrics_port, settings.metrics_address)
            self.serving = True


class Moderation(bootsteps.ConsumerStep):
    """Consumes ``moderation.requests`` (and its overflow, ``moderation.deferred``)."""

    requires = (Publishing, "celery.worker.consumer:Connection")

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = settings_of(c)
        self.pipeline = c.moderation_pipeline = build_pipeline(self.settings)
        self.depth = QueueDepth(
            self.settings.broker_url,
            self.settings.requests_queue,
            ssl=broker_ssl(self.settings),
        )
        self.intake: Intake | None = None
        c.moderation = None  # the Intake once consuming: worker.tasks hands requests to it

    def get_consumers(self, channel: Any) -> list[Consumer]:
        assert self.intake is not None
        intake = self.intake
        topology.declare_all(channel, self.settings)
        intake.acker.reset()  # a new channel (start or reconnect): old tags are void
        consumers = [
            Consumer(
                raw_deliveries(channel),
                queues=[topology.requests_queue(self.settings)],
                on_message=intake.receive,
                prefetch_count=self.settings.prefetch,
                no_ack=False,
            )
        ]
        if self.pipeline.classifier is not None:
            # its own channel: its own prefetch, so it brings in only what the LLM can take
            consumers.append(
                Consumer(
                    raw_deliveries(channel.connection.channel()),
                    queues=[topology.deferred_queue(self.settings)],
                    on_message=lambda message: intake.receive(message, deferred=True),
                    prefetch_count=self.settings.deferred_prefetch,
                    no_ack=False,
                )
            )
        return consumers

    def start(self, c: Any) -> None:
        if c.hub is None:
            raise RuntimeError(
                "the moderation consumer needs Celery's event loop: use the default "
                "(threads/solo/prefork) pool, not gevent or eventlet"
            )
        if self.intake is None:
            self.intake = Intake(
                self.settings,
                self.pipeline,
                c.moderation_publisher,
                c.hub,
                backlogged=lambda: self.depth.backlogged(self.settings.batch_size),
            )
            self.depth.start()
            self.intake.heap.freeze()
        # Declared now, consumed once the event loop runs: the loop's callbacks carry the
        # acks, batch timers and finished batches, and until it runs Celery's other steps
        # read the connection synchronously (declares, qos), which would hand us messages
        # that nothing could ack (the way Celery's own task consumer starts, too).
        self.consumers = self.get_consumers(c.connection.channel())
        self.depth.socket = connection_socket(c.connection)
        c.hub.call_soon(self._begin, c)

    def _begin(self, c: Any) -> None:
        for consumer in self.consumers or []:
            consumer.consume()
        c.moderation = c.app.moderation_intake = self.intake  # for worker.tasks
        log.info(
            "moderation_consumer_started",
            queue=self.settings.requests_queue,
            llm=self.pipeline.classifier is not None,
            policy=self.pipeline.policies.path.name,
        )

    def stop(self, c: Any) -> None:
        """Finish what is in flight (bounded), ack it, then let the rest be redelivered."""
        c.moderation = c.app.moderation_intake = None
        for consumer in self.consumers or []:
            with contextlib.suppress(Exception):
                consumer.cancel()
        if self.intake is not None:
            self.intake.finish(self.settings.shutdown_grace_s if worker_shutting_down() else 0)
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        super().shutdown(c)
        if self.intake is not None:
            self.intake.close()
        self.depth.stop()


class Health(bootsteps.StartStopStep):
    """Touches ``MODERATION_HEALTH_FILE`` every 5 s from the event loop, so the file goes
    stale when the loop is stuck, not only when the process is gone. First touched once
    the consumers are up and ``/metrics`` answers: a fresh file means "consuming", which
    is what readiness probes and test harnesses wait for."""

    requires = (Metrics, Moderation)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.timer: Any = None

    def start(self, c: Any) -> None:
        path = settings_of(c).health_file

        def touch() -> None:
            with contextlib.suppress(OSError):
                path.touch()

        if c.hub is None:
            touch()
            return
        c.hub.call_soon(touch)  # after Moderation's own call_soon, which starts consuming
        self.timer = c.hub.call_repeatedly(5.0, touch)

    def stop(self, c: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Reviews(bootsteps.StartStopStep):
    """The review store (``MODERATION_DATABASE_URL``): refuses to start against a
    database whose schema is behind, then consumes review items and decisions on a
    thread of its own (``worker._review_consumer``) and keeps the pipeline's overrides
    fresh. Nothing without a database URL."""

    requires = (Moderation,)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.consumer: Any = None

    def start(self, c: Any) -> None:
        settings = settings_of(c)
        if not settings.database_url or self.consumer is not None:
            return
        from worker import _db
        from worker._review_consumer import ReviewConsumer
        from worker.reviews import Overrides

        try:
            _db.require_current(settings.database_url)
        except _db.DatabaseBehind as exc:
            log.critical("review_store_behind", error=str(exc))
            raise SystemExit(f"moderation worker: {exc}") from None
        overrides = Overrides()
        self.consumer = ReviewConsumer(
            settings, c.moderation_publisher, overrides, consume=settings.review_store_in_worker
        ).start()
        c.moderation_pipeline.overrides = overrides
        log.info("review_store_started", overrides=len(overrides))

    def shutdown(self, c: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None


STEPS = (Publishing, Metrics, Moderation, Reviews, Health)
