"""Prometheus metrics: one place that names them all (the README lists them with PromQL).

The stages report through ``worker._hooks.Hooks``; ``MetricsHooks`` turns those reports
into these metrics. With no metrics port the objects still count, nobody scrapes them,
and the cost is a few hundred nanoseconds per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import prometheus_client
import structlog
from prometheus_client import Gauge, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from worker._hooks import Hooks

if TYPE_CHECKING:
    from worker._batch_result import BatchResult
    from worker.models import Verdict
    from worker.validate import DeadLetter

log = structlog.get_logger("worker.metrics")


class _CachedLabels(MetricWrapperBase):
    """``labels()`` remembered per label values: prometheus_client re-validates and locks on
    every call, which cost more than the observation itself on the per-message path."""

    _children: dict[tuple[object, ...], Any]

    def labels(self, *values: object, **labelkwargs: object) -> Self:
        if labelkwargs:  # keyword labels (no caller uses them): prometheus_client's own path
            return super().labels(*values, **labelkwargs)
        try:
            children = self._children
        except AttributeError:
            children = self._children = {}
        child = children.get(values)
        if child is None:
            child = children[values] = super().labels(*values)
        return child


class Counter(_CachedLabels, prometheus_client.Counter):
    pass


class Histogram(_CachedLabels, prometheus_client.Histogram):
    pass


_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)

VERDICTS = Counter("moderation_verdicts", "Verdicts published", ["action", "source"])
DEAD_LETTERS = Counter("moderation_dead_letters", "Messages dead-lettered", ["reason"])
STAGE_SECONDS = Histogram(
    "moderation_stage_seconds", "Time spent per stage", ["stage"], buckets=_LATENCY_BUCKETS
)
LLM_REQUESTS = Counter(
    "moderation_llm_requests",
    "HTTP requests to the LLM endpoint by outcome (ok, cut_off, timeout, rate_limited, "
    "server_error, client_error, context, connection, bad_reply, error)",
    ["outcome"],
)
LLM_CONCURRENCY_LIMIT = Gauge(
    "moderation_llm_concurrency_limit", "Calls the adaptive limit lets be in flight now"
)
LLM_BATCH_TARGET = Gauge(
    "moderation_llm_batch_target", "Items per call the latency budget allows now"
)
DEFERRED = Counter(
    "moderation_deferred", "Requests moved to the deferred queue (the LLM stage was full)"
)
LLM_TOKENS = Counter("moderation_llm_tokens", "LLM tokens", ["kind"])
LLM_COST = Counter("moderation_llm_cost_usd", "LLM cost in USD")
CACHE = Counter("moderation_cache_lookups", "Score cache lookups", ["result"])
BATCH_SIZE = Histogram(
    "moderation_llm_batch_size", "Messages per LLM call", buckets=(1, 2, 4, 8, 16, 32, 48, 64, 128)
)
ERRORS = Counter("moderation_errors", "Errors by kind", ["kind"])
SIGNAL_COUNTS = Histogram(
    "moderation_signal_batch_size",
    "Messages counted per signals round trip to Redis",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SIGNALS_UNAVAILABLE = Counter(
    "moderation_signals_unavailable", "Messages whose signal counts Redis could not give"
)
SIGNALS_FIRED = Counter("moderation_signals_fired", "Verdicts a signal rule touched", ["rule_id"])
INFLIGHT = Gauge("moderation_inflight_messages", "Requests received and not yet acked")


def serve(port: int | None, address: str = "0.0.0.0") -> None:
    """Expose /metrics on ``address:port`` (port None or 0: off). A taken port is logged,
    not fatal."""
    if not port:
        return
    try:
        start_http_server(port, addr=address)
        log.info("metrics_serving", port=port, address=address)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=port, error=str(exc))


class MetricsHooks(Hooks):
    """The stages' reports as Prometheus metrics."""

    def __init__(self) -> None:
        self._prepare = STAGE_SECONDS.labels("prepare")
        self._cache = STAGE_SECONDS.labels("cache")
        self._llm = STAGE_SECONDS.labels("llm")
        self._publish = STAGE_SECONDS.labels("publish")
        self._end_to_end = STAGE_SECONDS.labels("end_to_end")
        self._local_hit = CACHE.labels("hit_local")
        self._local_miss = CACHE.labels("miss_local")
        self._shared_hit = CACHE.labels("hit_shared")
        self._signals = STAGE_SECONDS.labels("signals")

    def prepared(self, seconds: float) -> None:
        self._prepare.observe(seconds)

    def local_cache(self, hit: bool) -> None:
        (self._local_hit if hit else self._local_miss).inc()

    def shared_cache(self, seconds: float, hits: int) -> None:
        self._cache.observe(seconds)
        self._shared_hit.inc(hits)

    def counted(self, seconds: float, messages: int, ok: bool) -> None:
        self._signals.observe(seconds)
        SIGNAL_COUNTS.observe(messages)
        if not ok:
            SIGNALS_UNAVAILABLE.inc(messages)

    def llm_batch(
        self, result: BatchResult, distinct: int, seconds: float, cost_usd: float
    ) -> None:
        usage = result.usage
        self._llm.observe(seconds)
        BATCH_SIZE.observe(distinct)
        LLM_TOKENS.labels("prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels("completion").inc(usage.completion_tokens)
        LLM_TOKENS.labels("cached").inc(usage.cached_tokens)
        LLM_COST.inc(cost_usd)

    def failed(self, stage: str) -> None:
        ERRORS.labels(stage).inc()

    def llm_request(self, outcome: str, limit: float) -> None:
        LLM_REQUESTS.labels(outcome).inc()
        LLM_CONCURRENCY_LIMIT.set(limit)

    def batch_target(self, size: int) -> None:
        LLM_BATCH_TARGET.set(size)

    def received(self) -> None:
        INFLIGHT.inc()

    def settled(self, count: int) -> None:
        INFLIGHT.dec(count)

    def deferred(self) -> None:
        DEFERRED.inc()

    def dead_letter(self, dead: DeadLetter) -> None:
        DEAD_LETTERS.labels(dead.reason.value).inc()

    def verdict(self, verdict: Verdict) -> None:
        VERDICTS.labels(verdict.action.value, verdict.source.value).inc()
        for fired in verdict.signals:
            SIGNALS_FIRED.labels(fired.rule_id).inc()

    def published(self, seconds: float, latencies: list[float], ok: bool) -> None:
        self._publish.observe(seconds)
        end_to_end = self._end_to_end
        for latency in latencies:
            end_to_end.observe(latency + seconds)
        if not ok:
            ERRORS.labels("publish").inc()
