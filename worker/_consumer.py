"""The Celery glue: a consumer bootstep that moderates raw JSON from ``moderation.requests``.

Producers publish plain JSON, not Celery task messages, so the worker consumes the queue
with its own kombu consumer inside Celery's event loop (Celery keeps the connection,
reconnects, handles signals, remote control and events). Threading model:

- event loop thread: receive, run the cheap local stages (``Pipeline.prepare``), batch
  what needs the LLM, ack/reject; it is the only thread that touches the consumer channel;
- a thread pool: ``Pipeline.complete`` for micro-batches (shared cache + one LLM call);
- the publisher thread: verdicts and dead letters with confirms; when a group is
  confirmed, the ack is handed back to the event loop with ``hub.call_soon``.

A request is acked only after its verdict (or dead letter) is confirmed by the broker.
Acks go out as one ``multiple`` ack for the settled prefix of each channel's delivery
tags (``_AckWindow``) rather than one frame per message.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import bootsteps
from celery.worker import state as worker_state
from kombu import Consumer

from worker import metrics, topology
from worker._backlog import QueueDepth
from worker._batcher import Batcher
from worker._heap import HeapFreezer
from worker.models import Verdict
from worker.pipeline import DeadLetter, Pending, Pipeline, build_pipeline
from worker.publish import OutMessage, Publisher, dead_letter_message, verdict_message
from worker.settings import get_settings
from worker.validate import Envelope

log = structlog.get_logger("worker.consumer")

_PENDING, _SETTLED, _SENT = 0, 1, 2


class _AckWindow:
    """One consumer channel's unacknowledged delivery tags, in delivery order.

    ``flush`` acks the settled prefix with a single ``basic.ack(multiple=True)``; the
    broker then acks everything outstanding up to that tag, which is exactly the prefix
    (rejected or already acked tags are no longer outstanding). A slow batch holds the
    prefix back, so when more than ``stragglers`` settled tags wait behind it they are
    acked one by one: otherwise the prefetch window would fill and delivery would stop.
    """

    __slots__ = ("channel", "order", "settled", "state", "stragglers", "waiting")

    def __init__(self, channel: Any, stragglers: int) -> None:
        self.channel = channel
        self.order: deque[int] = deque()
        self.state: dict[int, int] = {}
        self.settled: list[int] = []  # settled since the prefix last caught up
        self.waiting = 0  # settled, not sent yet
        self.stragglers = stragglers

    def add(self, tag: int) -> None:
        self.order.append(tag)
        self.state[tag] = _PENDING

    def settle(self, tag: int) -> bool:
        """Mark ``tag`` for acking; False if this window does not hold it."""
        if self.state.get(tag) != _PENDING:
            return False
        self.state[tag] = _SETTLED
        self.settled.append(tag)
        self.waiting += 1
        return True

    def rejected(self, tag: int) -> None:
        if self.state.get(tag) == _PENDING:
            self.state[tag] = _SENT

    def flush(self) -> int:
        """Send what can be sent; returns the number of ack frames written."""
        order, state = self.order, self.state
        last = 0
        while order and state[order[0]] != _PENDING:
            tag = order.popleft()
            if state.pop(tag) == _SETTLED:
                last = tag
                self.waiting -= 1
        frames = 0
        if last:
            self.channel.basic_ack(last, multiple=True)
            frames += 1
        if self.waiting > self.stragglers:
            for tag in self.settled:  # not a walk over the whole window
                if state.get(tag) == _SETTLED:
                    self.channel.basic_ack(tag)
                    state[tag] = _SENT
                    frames += 1
            self.waiting = 0
        if self.waiting == 0:
            self.settled.clear()
        return frames


class _Delivery:
    """A received request: the few fields of kombu's ``Message`` we use, built for a
    fraction of its cost (it copies and inspects headers and properties per message).
    Installed as the consumer channel's ``message_to_python``."""

    __slots__ = ("accept", "body", "channel", "delivery_info", "delivery_tag", "properties")
    errors = ()  # kombu's Consumer checks it

    def __init__(self, raw: Any, channel: Any) -> None:
        self.body = raw.body
        self.channel = channel
        self.delivery_tag = raw.delivery_tag
        self.delivery_info = raw.delivery_info
        self.properties = raw.properties
        self.accept = None

    @property
    def content_type(self) -> str | None:
        return self.properties.get("content_type")

    @property
    def content_encoding(self) -> str | None:
        return self.properties.get("content_encoding")

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.get("application_headers") or {}

    def ack(self) -> None:
        self.channel.basic_ack(self.delivery_tag)

    def reject(self, requeue: bool = False) -> None:
        self.channel.basic_reject(self.delivery_tag, requeue=requeue)


_REDELIVERED = "x-moderation-redelivered"


def _raw(channel: Any) -> Any:
    """A channel whose bodies stay bytes and whose deliveries are ``_Delivery`` objects:
    py-amqp would decode bodies to str (content_encoding) only for validate to encode and
    decode them again."""
    channel.auto_decode = False
    channel.message_to_python = functools.partial(_Delivery, channel=channel)
    return channel


class ModerationConsumer(bootsteps.ConsumerStep):
    """Consumes ``moderation.requests``; see the module docstring for the threading model."""

    name = "moderation"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = get_settings()
        self.pipeline: Pipeline = build_pipeline(self.settings)
        self.publisher = Publisher(self.settings).start()
        self.depth = QueueDepth(self.settings.broker_url, self.settings.requests_queue).start()
        self.executor = ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="moderation-batch"
        )
        self.hostname = socket.gethostname()
        classifier = self.pipeline.classifier
        self.batcher: Batcher[tuple[Pending, Any]] = Batcher(
            start=self._submit_batch,
            size=self._batch_size,
            slots=(lambda: int(classifier.limit.limit)) if classifier else (lambda: 1 << 30),
            wait_s=self._batch_wait_s,
            largest=self.settings.batch_size,
            eager_below=self.settings.batch_eager_below,
        )
        self._batch_timer: Any = None
        self._batch_due: float | None = None
        self._settled: queue.SimpleQueue[tuple[list[Any], bool]] = queue.SimpleQueue()
        self._inflight = 0
        self._llm_pending = 0  # needing the LLM: held by the batcher or in a running batch
        self._inflight_lock = threading.Lock()
        self._deferred_logged = 0.0
        self._hub: Any = None
        self._heartbeat: Any = None
        self._windows: dict[int, _AckWindow] = {}  # id(channel) -> its unacked tags
        # few: a settled message waiting behind a slow LLM batch is a duplicate after a
        # crash (the broker redelivers what was not acked)
        self._stragglers = max(min(self.settings.prefetch // 8, 64), 1)
        self._debug = self.settings.log_level.upper() == "DEBUG"  # per-message log args
        self._end_to_end = metrics.STAGE_SECONDS.labels("end_to_end")
        self._publish_seconds = metrics.STAGE_SECONDS.labels("publish")
        self._heap = HeapFreezer()

    # -- lifecycle ----------------------------------------------------------------------

    def get_consumers(self, channel: Any) -> list[Consumer]:
        topology.declare_all(channel, self.settings)
        self._windows.clear()  # a new channel (start or reconnect): old tags are void
        consumers = [
            Consumer(
                _raw(channel),
                queues=[topology.requests_queue(self.settings)],
                on_message=self._on_message,
                prefetch_count=self.settings.prefetch,
                no_ack=False,
            )
        ]
        if self.pipeline.classifier is not None:
            # its own channel: its own prefetch, so it brings in only what the LLM can take
            deferred = _raw(channel.connection.channel())
            consumers.append(Consumer(
                deferred,
                queues=[topology.deferred_queue(self.settings)],
                on_message=self._on_deferred,
                prefetch_count=self.settings.deferred_prefetch,
                no_ack=False,
            ))
        return consumers

    def start(self, c: Any) -> None:
        self._hub = c.hub
        if self._hub is None:
            raise RuntimeError(
                "the moderation consumer needs Celery's event loop: use the default "
                "(solo/threads/prefork) pool, not gevent or eventlet"
            )
        # Declared now, consumed once the event loop runs: the loop's callbacks carry the
        # acks, batch timers and finished batches, and until it runs Celery's other steps
        # read the connection synchronously (declares, qos), which would hand us messages
        # that nothing could ack (the way Celery's own task consumer starts, too).
        self.consumers = self.get_consumers(c.connection.channel())
        self.depth.socket = getattr(c.connection.connection, "sock", None)
        self._hub.call_soon(self._begin)
        if self._heartbeat is None:
            metrics.serve(self.settings.metrics_port)
            self._heap.freeze()
        else:  # a reconnect: Celery cancelled the timers of the old connection
            self._heartbeat.cancel()
        self._heartbeat = self._hub.call_repeatedly(5.0, self._touch_health)

    def _begin(self) -> None:
        for consumer in self.consumers or []:
            consumer.consume()
        self._touch_health()
        log.info("moderation_consumer_started", queue=self.settings.requests_queue,
                 llm=self.pipeline.classifier is not None, policy=self.pipeline.policies.path.name)

    def stop(self, c: Any) -> None:
        """Finish what is in flight (bounded), ack it, then let the rest be redelivered."""
        for consumer in self.consumers or []:
            with contextlib.suppress(Exception):
                consumer.cancel()
        self.batcher.flush()
        # should_stop is the exit code, 0 for a warm shutdown: test it against None/False
        shutting_down = any(
            flag is not None and flag is not False
            for flag in (worker_state.should_stop, worker_state.should_terminate)
        )
        deadline = time.monotonic() + (self.settings.shutdown_grace_s if shutting_down else 0)
        while self._inflight and time.monotonic() < deadline:
            self._drain_settled()
            time.sleep(0.01)
        self._drain_settled()
        if self._inflight:
            log.warning("shutdown_left_inflight", messages=self._inflight)
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        super().shutdown(c)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.publisher.stop(timeout=5)
        self.depth.stop()

    def _touch_health(self) -> None:
        with contextlib.suppress(OSError):
            self.settings.health_file.touch()

    # -- event loop thread --------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        self._receive(message, deferred=False)

    def _on_deferred(self, message: Any) -> None:
        self._receive(message, deferred=True)

    def _receive(self, message: Any, deferred: bool) -> None:
        channel = message.channel
        window = self._windows.get(id(channel))
        if window is None or window.channel is not channel:
            window = self._windows[id(channel)] = _AckWindow(channel, self._stragglers)
        window.add(message.delivery_tag)
        with self._inflight_lock:
            self._inflight += 1
        metrics.INFLIGHT.inc()
        try:
            self._accept(message, deferred)
        except Exception:  # never let one message break the loop; the delivery limit
            log.exception("receive_failed")  # dead-letters it if it keeps failing
            self._settle([message], ok=False)

    def _accept(self, message: Any, deferred: bool) -> None:
        body = message.body
        if isinstance(body, str):  # py-amqp decoded it using content_encoding: undo that
            body = body.encode(message.content_encoding or "utf-8", "surrogateescape")
        delivery = message.delivery_info or {}
        headers = dict(message.headers)
        envelope = Envelope(
            body=body if type(body) is bytes else bytes(body),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            redelivered=bool(delivery.get("redelivered") or headers.get(_REDELIVERED)),
            headers=headers,
        )
        outcome = self.pipeline.prepare(envelope)
        if not isinstance(outcome, Pending):
            self._publish([(outcome, message)])
            return
        if not deferred and self._llm_pending >= self.settings.llm_max_pending:
            self._defer(envelope, message)  # the LLM stage is full: rules must not wait
            return
        with self._inflight_lock:
            self._llm_pending += 1
        if envelope.redelivered:
            # a redelivery may be the message that killed a worker: keep it alone
            self._schedule(self.batcher.alone((outcome, message)))
        else:
            self._schedule(self.batcher.add((outcome, message)))

    def _defer(self, envelope: Envelope, message: Any) -> None:
        """Move a request to the deferred queue (acked here once the broker has it)."""
        headers = {**envelope.headers, "x-moderation-deferred": True}
        if envelope.redelivered:
            headers[_REDELIVERED] = True
        out = OutMessage(
            exchange="",
            routing_key=self.settings.deferred_queue,
            body=envelope.body,
            headers=headers,
            content_type=envelope.content_type or "application/json",
            content_encoding=envelope.content_encoding,
        )
        metrics.DEFERRED.inc()
        now = time.monotonic()
        if now - self._deferred_logged > 10:
            self._deferred_logged = now
            log.warning("llm_stage_full", pending=self._llm_pending,
                        queue=self.settings.deferred_queue)
        self.publisher.submit([out], lambda ok: self._settle([message], ok))

    def _schedule(self, due: float | None) -> None:
        """Have the batcher polled at ``due`` (monotonic), unless a poll is due sooner."""
        if due is None or (self._batch_due is not None and self._batch_due <= due):
            return
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        self._batch_due = due
        self._batch_timer = self._hub.call_later(max(0.0, due - time.monotonic()), self._poll)

    def _poll(self) -> None:
        self._batch_timer = self._batch_due = None
        self._schedule(self.batcher.poll())

    def _batch_finished(self) -> None:
        self._schedule(self.batcher.finished())

    def _backlogged(self) -> bool:
        """More than a full batch waits in the queue: its latency is the queue's whatever
        a call takes, and full batches drain it fastest (``worker._backlog``)."""
        return self.depth.backlogged(self.settings.batch_size)

    def _batch_size(self) -> int:
        return self.settings.batch_size if self._backlogged() else self.pipeline.batch_size()

    def _batch_wait_s(self) -> float:
        wait = self.settings.batch_wait_ms / 1000
        return 4 * wait if self._backlogged() else wait

    def _submit_batch(self, batch: list[tuple[Pending, Any]]) -> None:
        self.executor.submit(self._complete, batch)

    def _drain_settled(self) -> None:
        """Ack (or requeue) what the publisher has settled; event loop thread only."""
        settled = 0
        while True:
            try:
                messages, ok = self._settled.get_nowait()
            except queue.Empty:
                break
            for message in messages:
                channel = message.channel
                if not getattr(channel, "is_open", True):
                    continue  # its channel died: the broker redelivers it elsewhere
                window = self._windows.get(id(channel))
                if window is not None and window.channel is not channel:
                    window = None
                try:
                    if ok:
                        if window is None or not window.settle(message.delivery_tag):
                            message.ack()
                    else:
                        if window is not None:
                            window.rejected(message.delivery_tag)
                        message.reject(requeue=True)
                except Exception as exc:  # channel gone: the broker redelivers it
                    log.warning("settle_failed", error=type(exc).__name__)
            settled += len(messages)
        for key, window in list(self._windows.items()):
            if not getattr(window.channel, "is_open", True):
                del self._windows[key]  # the broker requeued all of it already
                continue
            try:
                window.flush()
            except Exception as exc:  # channel gone: the broker redelivers it
                log.warning("settle_failed", error=type(exc).__name__)
                del self._windows[key]
        if settled:
            with self._inflight_lock:
                self._inflight -= settled
            metrics.INFLIGHT.dec(settled)

    # -- pool and publisher threads -----------------------------------------------------

    def _complete(self, batch: list[tuple[Pending, Any]]) -> None:
        """Pool thread: scores for a batch; each verdict is published as soon as it is
        known (streamed answers, cache hits), not when the whole batch is done."""
        sent = [False] * len(batch)

        def emit(verdicts: list[tuple[int, Verdict]]) -> None:
            for index, _ in verdicts:
                sent[index] = True
            with self._inflight_lock:
                self._llm_pending -= len(verdicts)
            self._publish([(verdict, batch[index][1]) for index, verdict in verdicts])

        try:
            self.pipeline.complete([pending for pending, _ in batch], emit)
        except Exception:
            log.exception("batch_failed", size=len(batch))
            metrics.ERRORS.labels("batch").inc()
            unsent = [message for (_, message), done in zip(batch, sent, strict=True)
                      if not done]
            with self._inflight_lock:
                self._llm_pending -= len(unsent)
            self._settle(unsent, ok=False)
        finally:
            self._hub.call_soon(self._batch_finished)
        self._heap.after_batch()

    def _publish(self, outcomes: list[tuple[Verdict | DeadLetter, Any]]) -> None:
        out: list[OutMessage] = []
        latencies: list[float] = []
        for outcome, _ in outcomes:
            if isinstance(outcome, DeadLetter):
                log.warning("dead_letter", reason=outcome.reason.value, detail=outcome.detail,
                            message_id=outcome.request_id)
                metrics.DEAD_LETTERS.labels(outcome.reason.value).inc()
                out.append(dead_letter_message(outcome, self.settings, self.hostname))
            else:
                if self._debug:
                    log.debug("verdict", message_id=outcome.id, tenant=outcome.tenant,
                              action=outcome.action.value, source=outcome.source.value,
                              latency_ms=outcome.latency_ms)
                metrics.VERDICTS.labels(outcome.action.value, outcome.source.value).inc()
                latencies.append(outcome.latency_ms / 1000)
                out.append(verdict_message(outcome, self.settings))
        messages = [m for _, m in outcomes]
        if not all(getattr(m.channel, "is_open", True) for m in messages):
            # the consumer channel closed (broker restart) while this was in flight: the
            # broker will redeliver these, so publishing now would only add duplicates
            self._settle(messages, ok=False)
            return
        started = time.monotonic()

        def done(ok: bool) -> None:
            publish_s = time.monotonic() - started
            self._publish_seconds.observe(publish_s)
            end_to_end = self._end_to_end
            for latency in latencies:
                end_to_end.observe(latency + publish_s)
            if not ok:
                metrics.ERRORS.labels("publish").inc()
            self._settle(messages, ok)

        self.publisher.submit(out, done)

    def _settle(self, messages: list[Any], ok: bool) -> None:
        self._settled.put((messages, ok))
        self._hub.call_soon(self._drain_settled)
