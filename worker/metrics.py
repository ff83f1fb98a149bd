"""Prometheus metrics: one place that names them all (the README lists them with PromQL).

The stages call these directly; with no metrics port the objects still count, nobody
scrapes them, and the cost is a few hundred nanoseconds per message.
"""

from __future__ import annotations

from typing import Any, Self

import prometheus_client
import structlog
from prometheus_client import Gauge, start_http_server
from prometheus_client.metrics import MetricWrapperBase

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
INFLIGHT = Gauge("moderation_inflight_messages", "Requests received and not yet acked")


def serve(port: int | None) -> None:
    """Expose /metrics on ``port`` (None or 0: off). A taken port is logged, not fatal."""
    if not port:
        return
    try:
        start_http_server(port)
        log.info("metrics_serving", port=port)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=port, error=str(exc))
