"""From a received request to its ack: the stages run around the event loop.

Threading model:

- the event loop thread: receive, run the cheap local stages (``Pipeline.prepare``),
  batch what needs the LLM, ack/reject; it is the only thread that touches a consumer
  channel;
- a thread pool: ``Pipeline.complete`` for micro-batches (shared cache + one LLM call);
- the publisher thread: verdicts and dead letters with confirms; once confirmed, the
  ack is handed back to the event loop (``worker._acks``).

A request is acked only after its verdict (or dead letter) is confirmed by the broker.
No Celery and no kombu here: a delivery is anything with ``body``, ``channel``,
``delivery_tag``, ``ack`` and ``reject``, and the loop anything with ``call_soon`` and
``call_later`` (Celery's hub in the worker, a fake in the tests).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from worker._acks import Acker, TaskDelivery
from worker._batcher import Batcher
from worker._heap import HeapFreezer
from worker._kombu_compat import body_bytes
from worker._limiter import AdaptiveLimit
from worker._review_hold import GROUP, Held, ReviewHold, Reviews
from worker._verdicts import Outcome
from worker.models import Action, ModerationRequest, Source, Verdict
from worker.normalise import cache_form
from worker.pipeline import DeadLetter, Pending, Pipeline
from worker.publish import OutMessage, Publisher, dead_letter_message, verdict_message
from worker.reviews import ReviewItem, items_body
from worker.settings import Settings
from worker.signals import Signals, digest
from worker.validate import Envelope

log = structlog.get_logger("worker.intake")

REDELIVERED = "x-moderation-redelivered"
USER_HEADER = "x-moderation-user-id"  # the validated publisher of a deferred request


@dataclass(frozen=True, slots=True)
class _Counting:
    """A valid request waiting for its counts, and what routing it needs after."""

    envelope: Envelope
    message: Any
    may_defer: bool
    request: ModerationRequest
    received: float


class Loop(Protocol):
    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...


def pending_cap(most: int, largest_batch: int, limit: AdaptiveLimit | None) -> int:
    """How many messages one process holds for the LLM: what its call slots take at full
    batches, and one batch more, at most ``most``. Beyond that they wait in the deferred
    queue, which every process consumes and KEDA watches; held here, behind a call limit
    that overload has cut, they would wait for this process alone while others idle."""
    if limit is None:
        return most
    return min(most, (limit.target + 1) * largest_batch)


class Intake:
    """Receives requests on the loop thread and settles each once its outcome is out."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        publisher: Publisher,
        loop: Loop,
        backlogged: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.publisher = publisher
        self.loop = loop
        self.backlogged = backlogged
        self.hostname = socket.gethostname()
        # few stragglers: a settled message waiting behind a slow LLM batch is a
        # duplicate after a crash (the broker redelivers what was not acked)
        self.acker = Acker(max(min(settings.prefetch // 8, 64), 1))
        self.executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="moderation-batch"
        )
        classifier = pipeline.classifier
        self.batcher: Batcher[tuple[Pending, Any]] = Batcher(
            start=lambda batch: self.executor.submit(self._complete, batch),
            size=self._batch_size,
            slots=(lambda: int(classifier.limit.limit)) if classifier else (lambda: 1 << 30),
            wait_s=self._batch_wait_s,
            largest=pipeline.backlog_batch_size,
            eager_below=settings.batch_eager_below,
        )
        self.inflight = 0  # received, not settled
        self.llm_pending = 0  # needing the LLM: held by the batcher or in a running batch
        self._lock = threading.Lock()
        self._batch_timer: Any = None
        self._batch_due: float | None = None
        self._deferred_logged = 0.0
        self._debug = settings.log_level.upper() == "DEBUG"
        self.hooks = pipeline.hooks
        self.heap = HeapFreezer()
        # counting for signal rules: one group at a time, off the loop (``_count_next``)
        self.counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderation-count")
        self._to_count: list[_Counting] = []
        self._counting: list[_Counting] | None = None
        # verdicts the review store records (none without a store)
        self._review_actions = (
            frozenset(Action(a) for a in settings.review_actions)
            if settings.database_url
            else frozenset()
        )
        # review verdicts decided one at a time wait briefly for others (_review_hold)
        self.review_hold = ReviewHold(loop, self._submit)

    # -- event loop thread --------------------------------------------------------------

    def receive(self, message: Any, deferred: bool = False) -> None:
        """A delivery from ``moderation.requests`` (or, ``deferred``, its overflow)."""
        self.acker.received(message)
        with self._lock:
            self.inflight += 1
        self.hooks.received()
        try:
            delivery = message.delivery_info or {}
            headers = dict(message.headers)
            envelope = Envelope(
                body=body_bytes(message),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                redelivered=bool(delivery.get("redelivered") or headers.get(REDELIVERED)),
                headers=headers,
                # deferred: the worker moved it, so RabbitMQ saw the worker's login; the
                # producer's, validated on the way in, rides in a header only the worker
                # can write there (producers may publish to moderation.requests only)
                user_id=headers.get(USER_HEADER)
                if deferred
                else (message.properties or {}).get("user_id"),
            )
            self._accept(envelope, message, may_defer=not deferred)
        except Exception:  # never let one message break the loop; the delivery limit
            log.exception("receive_failed")  # dead-letters it if it keeps failing
            self.settle([message], ok=False)

    def receive_task(self, delivery: TaskDelivery, redelivered: bool) -> None:
        """A request that came as a Celery task (``worker.tasks``)."""
        with self._lock:
            self.inflight += 1
        self.hooks.received()
        try:
            envelope = Envelope(
                body=delivery.body,
                content_type="application/json",
                content_encoding="utf-8",
                redelivered=redelivered,
                headers={},
            )
            self._accept(envelope, delivery, may_defer=False)  # its caller waits here
        except Exception:
            log.exception("receive_failed")
            self.settle([delivery], ok=False)

    def _accept(self, envelope: Envelope, message: Any, may_defer: bool) -> None:
        received = time.monotonic()
        if not self.pipeline.needs_counts():
            self._route(envelope, message, may_defer, self.pipeline.prepare(envelope, received))
            return
        request = self.pipeline.admit(envelope)
        if isinstance(request, DeadLetter):
            self._publish([(request, message)])
        elif request.author is None:  # nothing to count: no round trip to wait for
            outcome = self.pipeline.prepare(envelope, received, request, Signals())
            self._route(envelope, message, may_defer, outcome)
        else:
            self._to_count.append(_Counting(envelope, message, may_defer, request, received))
            if self._counting is None:
                self._count_next()

    def _count_next(self) -> None:
        """Count what arrived, in one Redis round trip off the loop; what arrives
        meanwhile is the next group, so a group is as large as the rate makes it."""
        group, self._to_count = self._to_count, []
        self._counting = group
        future = self.counter.submit(self.pipeline.count, [g.request for g in group])
        future.add_done_callback(lambda f: self.loop.call_soon(self._counted, group, f))

    def _counted(self, group: list[_Counting], future: Future[list[Signals | None]]) -> None:
        if group is not self._counting:
            return  # already handled (``finish`` counted it in place)
        self._counting = None
        try:
            counts: list[Signals | None] = future.result()
        except Exception:  # a bug in counting: the signals are absent, not the messages
            log.exception("count_failed", size=len(group))
            counts = [None] * len(group)
        for g, found in zip(group, counts, strict=True):
            outcome = self.pipeline.prepare(g.envelope, g.received, g.request, found)
            self._route(g.envelope, g.message, g.may_defer, outcome)
        if self._to_count:
            self._count_next()

    def _count_in_place(self) -> None:
        """At shutdown the loop may not run callbacks: settle the counting here (a
        group counted twice counts once: members are message ids)."""
        while self._counting is not None or self._to_count:
            if self._counting is None:
                self._counting, self._to_count = self._to_count, []
            group = self._counting
            future: Future[list[Signals | None]] = Future()
            try:
                future.set_result(self.pipeline.count([g.request for g in group]))
            except Exception as exc:
                future.set_exception(exc)
            self._counted(group, future)

    def _route(
        self, envelope: Envelope, message: Any, may_defer: bool, outcome: Outcome | Pending
    ) -> None:
        if not isinstance(outcome, Pending):
            self._publish([(outcome, message)])
            return
        if may_defer and self.llm_pending >= self._pending_cap():
            self._defer(envelope, message)  # the LLM stage is full: rules must not wait
            return
        with self._lock:
            self.llm_pending += 1
        if envelope.redelivered:
            # a redelivery may be the message that killed a worker: keep it alone
            self._schedule(self.batcher.alone((outcome, message)))
        else:
            self._schedule(self.batcher.add((outcome, message)))

    def _pending_cap(self) -> int:
        classifier = self.pipeline.classifier
        return pending_cap(
            self.settings.llm_max_pending,
            self.settings.batch_size,
            classifier.limit if classifier is not None else None,
        )

    def _defer(self, envelope: Envelope, message: Any) -> None:
        """Move a request to the deferred queue (acked here once the broker has it)."""
        headers = {**envelope.headers, "x-moderation-deferred": True}
        headers.pop(USER_HEADER, None)  # a producer's own would be trusted there
        if envelope.user_id:
            headers[USER_HEADER] = envelope.user_id
        if envelope.redelivered:
            headers[REDELIVERED] = True
        out = OutMessage(
            exchange="",
            routing_key=self.settings.deferred_queue,
            body=envelope.body,
            headers=headers,
            content_type=envelope.content_type or "application/json",
            content_encoding=envelope.content_encoding,
        )
        self.hooks.deferred()
        now = time.monotonic()
        if now - self._deferred_logged > 10:
            self._deferred_logged = now
            log.warning(
                "llm_stage_full", pending=self.llm_pending, queue=self.settings.deferred_queue
            )
        self.publisher.submit([out], lambda ok: self.settle([message], ok))

    def _schedule(self, due: float | None) -> None:
        """Have the batcher polled at ``due`` (monotonic), unless a poll is due sooner."""
        if due is None or (self._batch_due is not None and self._batch_due <= due):
            return
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        self._batch_due = due
        self._batch_timer = self.loop.call_later(max(0.0, due - time.monotonic()), self._poll)

    def _poll(self) -> None:
        self._batch_timer = self._batch_due = None
        self._schedule(self.batcher.poll())

    def _batch_finished(self) -> None:
        self._schedule(self.batcher.finished())

    def _batch_size(self) -> int:
        """More than a full batch waits in the queue: its latency is the queue's whatever
        a call takes, and full batches drain it fastest (``worker._backlog``), as full
        as the endpoint can answer within a call's time-out."""
        if self.backlogged():
            return self.pipeline.backlog_batch_size()
        return self.pipeline.batch_size()

    def _batch_wait_s(self) -> float:
        wait = self.settings.batch_wait_ms / 1000
        return 4 * wait if self.backlogged() else wait

    def drain(self) -> None:
        """Ack (or requeue) what the publisher has settled."""
        settled = self.acker.drain()
        if settled:
            with self._lock:
                self.inflight -= settled
            self.hooks.settled(settled)

    def finish(self, grace_s: float) -> None:
        """Start what is held, then wait (at most ``grace_s``) for it to be settled."""
        self._count_in_place()
        self.batcher.flush()
        self.review_hold.flush()
        deadline = time.monotonic() + grace_s
        while self.inflight and time.monotonic() < deadline:
            self.drain()
            time.sleep(0.01)
        self.drain()
        if self.inflight:
            log.warning("shutdown_left_inflight", messages=self.inflight)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.counter.shutdown(wait=False, cancel_futures=True)
        self.pipeline.flush_violations()

    # -- any thread ---------------------------------------------------------------------

    def settle(self, messages: list[Any], ok: bool) -> None:
        """Any thread. ``call_soon`` is safe from any thread: kombu's hub wakes its poll
        for it since kombu 5.7 (before, it only took a lock and the acks waited for the
        poll's time-out), which is why ``kombu>=5.7`` is pinned."""
        self.acker.settle(messages, ok)
        self.loop.call_soon(self.drain)

    def submit_task(self, request: Any, redelivered: bool = False) -> Future[Verdict | DeadLetter]:
        """A Celery task's request, from its pool thread: the future resolves once the
        verdict (or dead letter) is confirmed by the broker."""
        delivery = TaskDelivery(orjson.dumps(request))
        self.loop.call_soon(self.receive_task, delivery, redelivered)
        return delivery.future

    # -- pool and publisher threads -----------------------------------------------------

    def _complete(self, batch: list[tuple[Pending, Any]]) -> None:
        """Pool thread: scores for a batch; each verdict is published as soon as it is
        known (streamed answers, cache hits), not when the whole batch is done."""
        sent = [False] * len(batch)

        def emit(verdicts: list[tuple[int, Verdict]]) -> None:
            for index, _ in verdicts:
                sent[index] = True
            with self._lock:
                self.llm_pending -= len(verdicts)
            self._publish([(verdict, batch[index][1]) for index, verdict in verdicts])

        try:
            self.pipeline.complete([pending for pending, _ in batch], emit)
        except Exception:
            log.exception("batch_failed", size=len(batch))
            self.hooks.failed("batch")
            unsent = [message for (_, message), done in zip(batch, sent, strict=True) if not done]
            with self._lock:
                self.llm_pending -= len(unsent)
            self.settle(unsent, ok=False)
        finally:
            self.loop.call_soon(self._batch_finished)
        self.heap.after_batch()

    def _reviewed(self, verdict: Verdict) -> bool:
        """Whether the review store records this verdict (its tenant's policy says which
        actions, else ``MODERATION_REVIEW_ACTIONS``)."""
        if not self._review_actions or verdict.source == Source.HUMAN:
            return False
        earlier = verdict.earlier_decision
        if earlier is not None and earlier.decision != verdict.action.value:
            return True  # the policy changed what a person decided: they see it
        actions = self.pipeline.policies.current.for_tenant(verdict.tenant).review_store
        if actions is None:
            return verdict.action in self._review_actions
        return verdict.action.value in actions

    def _review_item(self, verdict: Verdict, message: Any) -> ReviewItem | None:
        """The review store's copy of a verdict, with the text a reviewer reads (the
        request is parsed again: the verdict path keeps no text)."""
        body = message.body if isinstance(message, TaskDelivery) else body_bytes(message)
        try:
            request = orjson.loads(body)
            text = request["text"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("review_item_unreadable", message_id=verdict.id)
            return None
        context = request.get("context")
        return ReviewItem(verdict, text, context, digest(cache_form(text)), time.time())

    def _publish(self, outcomes: list[tuple[Verdict | DeadLetter, Any]]) -> None:
        out: list[OutMessage] = []
        reviews: Reviews = []
        latencies: list[float] = []
        for outcome, message in outcomes:
            if isinstance(message, TaskDelivery):
                message.outcome = outcome
            if isinstance(outcome, DeadLetter):
                log.warning(
                    "dead_letter",
                    reason=outcome.reason.value,
                    detail=outcome.detail,
                    message_id=outcome.request_id,
                )
                self.hooks.dead_letter(outcome)
                out.append(dead_letter_message(outcome, self.settings, self.hostname))
            else:
                if self._debug:
                    log.debug(
                        "verdict",
                        message_id=outcome.id,
                        tenant=outcome.tenant,
                        action=outcome.action.value,
                        source=outcome.source.value,
                        latency_ms=outcome.latency_ms,
                    )
                self.hooks.verdict(outcome)
                latencies.append(outcome.latency_ms / 1000)
                out.append(verdict_message(outcome, self.settings))
                if self._reviewed(outcome):
                    item = self._review_item(outcome, message)
                    if item is not None:
                        reviews.append((item, out[-1].body))
        messages = [m for _, m in outcomes]
        held = Held(out, reviews, messages, latencies)
        if reviews and len(reviews) < GROUP:
            self.review_hold.add(held)
        else:
            self._submit(held)

    def _submit(self, held: Held) -> None:
        messages, latencies = held.messages, held.latencies
        if not all(getattr(m.channel, "is_open", True) for m in messages):
            # the consumer channel closed (broker restart) while this was in flight: the
            # broker will redeliver these, so publishing now would only add duplicates
            self.settle(messages, ok=False)
            return
        out = list(held.out)
        if held.reviews:  # one message for the review items (see reviews.items_body)
            body = items_body(held.reviews)
            out.append(OutMessage(exchange="", routing_key=self.settings.reviews_queue, body=body))
        started = time.monotonic()

        def done(ok: bool) -> None:
            self.hooks.published(time.monotonic() - started, latencies, ok)
            self.settle(messages, ok)

        self.publisher.submit(out, done)
