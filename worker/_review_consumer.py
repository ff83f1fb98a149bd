"""The review store's consumer: one thread, its own broker and database connections.

``moderation.reviews`` -> ``ReviewStore.record`` in batches, acked once committed;
``moderation.decisions`` -> ``ReviewStore.decide``, the final verdict published (acked
once confirmed), a bad decision dead-lettered with the reason; and every few seconds
the new overrides read into ``Overrides``. When PostgreSQL is away nothing is acked:
the messages wait in their queues (or are redelivered) until it is back.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import structlog
from kombu import Connection, Consumer
from pydantic import ValidationError

from worker import topology
from worker._kombu_compat import raw_deliveries
from worker._tls import broker_ssl
from worker.models import Decision
from worker.publish import Publisher, dead_letter_message, verdict_message
from worker.reviews import Overrides, ReviewItem, ReviewStore, UnknownRequest, read_items
from worker.settings import Settings
from worker.validate import DeadLetter, DeadReason, Envelope

log = structlog.get_logger("worker.reviews")

_BATCH = 500  # items per transaction
_PREFETCH = 64  # messages: a worker's message carries one published batch's items


class ReviewConsumer:
    def __init__(
        self,
        settings: Settings,
        publisher: Publisher | None,
        overrides: Overrides,
        consume: bool = True,
    ) -> None:
        """``consume`` False: only keep ``overrides`` fresh (the store's queues are
        consumed by ``python -m worker review-store`` processes of their own)."""
        assert settings.database_url
        assert publisher is not None or not consume
        self.settings = settings
        self.consume = consume
        self.publisher = publisher
        self.overrides = overrides
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moderation-reviews", daemon=True)
        self._store: ReviewStore | None = None
        self._items: list[ReviewItem] = []
        self._messages: list[Any] = []  # the deliveries ``_items`` came in, unacked
        self._decisions: list[Any] = []
        self._settled: queue.SimpleQueue[tuple[Any, bool]] = queue.SimpleQueue()
        self._refreshed = 0.0
        self.recorded = 0
        self.decided = 0

    def start(self) -> ReviewConsumer:
        self._store = ReviewStore(self.settings.database_url or "")
        self.overrides.refresh(self._store)
        self._refreshed = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        if not self.consume:
            while not self._stop.wait(self.settings.overrides_refresh_s):
                try:
                    self.overrides.refresh(self._ensure_store())
                except Exception as exc:  # the database is away: the old ones hold
                    log.warning("overrides_refresh_failed", error=type(exc).__name__)
                    self._store = None
            return
        while not self._stop.is_set():
            try:
                with Connection(
                    self.settings.broker_url, heartbeat=0, ssl=broker_ssl(self.settings)
                ) as connection:
                    self._consume(connection)
            except Exception as exc:  # the broker or the database: start again
                log.warning("review_consumer_failed", error=type(exc).__name__, exc_info=True)
                self._items.clear()  # unacked: the broker redelivers them
                self._messages.clear()
                self._decisions.clear()
                self._stop.wait(1.0)

    def _consume(self, connection: Connection) -> None:
        channel = connection.channel()
        topology.declare_all(channel, self.settings)
        reviews = Consumer(
            raw_deliveries(channel),
            queues=[topology.reviews_queue(self.settings)],
            on_message=self._on_item,
            prefetch_count=_PREFETCH,
            no_ack=False,
        )
        decisions = Consumer(
            raw_deliveries(connection.channel()),
            queues=[topology.decisions_queue(self.settings)],
            on_message=self._decisions.append,
            prefetch_count=50,
            no_ack=False,
        )
        with reviews, decisions:
            log.info("review_consumer_started")
            while not self._stop.is_set():
                self._gather(connection)
                self._flush()

    def _gather(self, connection: Connection) -> None:
        """Take in what has arrived, up to a batch: ``drain_events`` delivers one
        message a call, and a transaction per item would cap the store at the
        database's round trips."""
        deadline = time.monotonic() + 0.1
        while len(self._items) < _BATCH and not self._decisions:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # once something waits, only what is already here joins it
            timeout = 0.01 if self._messages else left
            try:
                connection.drain_events(timeout=timeout)
            except TimeoutError:
                if self._messages:
                    return

    def _on_item(self, message: Any) -> None:
        try:
            items = read_items(message.body)
        except Exception:  # written by a worker: a bug, not input
            log.exception("review_item_unreadable")
            items = []
        self._items.extend(items)
        self._messages.append(message)

    def _flush(self) -> None:
        store = self._ensure_store()
        if self._messages:
            items, self._items = self._items, []
            messages, self._messages = self._messages, []
            store.record(items)
            last = messages[-1]  # one channel, delivered in order: ack all of the batch
            last.channel.basic_ack(last.delivery_tag, multiple=True)
            self.recorded += len(items)
        while self._decisions:
            self._decide(store, self._decisions.pop(0))
        while not self._settled.empty():
            message, ok = self._settled.get()
            if ok:
                message.ack()
            else:
                message.reject(requeue=True)
        if time.monotonic() - self._refreshed > self.settings.overrides_refresh_s:
            self.overrides.refresh(store)
            self._refreshed = time.monotonic()

    def _decide(self, store: ReviewStore, message: Any) -> None:
        try:
            decision = Decision.model_validate_json(message.body)
            verdict = store.decide(decision)
        except (ValidationError, UnknownRequest) as exc:
            reason = "invalid_decision" if isinstance(exc, ValidationError) else "unknown_request"
            detail = str(exc).splitlines()[0][:300]
            log.warning("decision_dead_letter", reason=reason, detail=detail)
            dead = DeadLetter(Envelope(bytes(message.body)), DeadReason(reason), detail)
            out = [dead_letter_message(dead, self.settings, "reviews")]
        else:
            self.decided += 1
            if verdict is None:  # stored before: a redelivery
                message.ack()
                return
            out = [verdict_message(verdict, self.settings)]
        assert self.publisher is not None
        self.publisher.submit(out, lambda ok: self._settled.put((message, ok)))

    def _ensure_store(self) -> ReviewStore:
        if self._store is None or self._store.closed:
            self._store = ReviewStore(self.settings.database_url or "")
        return self._store


__all__ = ["ReviewConsumer"]
