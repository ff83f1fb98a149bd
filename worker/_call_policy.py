"""How the classifier treats a call that failed or fell short: deadlines, retries, the
breaker's log, splitting, and the reason an item is left without an answer."""

from __future__ import annotations

import time
from typing import Any

import openai
import pybreaker
import structlog

from worker import _llm_call
from worker._batch_result import BatchResult, Job

log = structlog.get_logger("worker.classify")


class NoCapacity(Exception):
    """No call slot became free before the deadline."""


class Deadline:
    """When a request's time is up: its calls and the backoff between them count, the
    waits for a call slot do not (that is queueing, bounded on its own: a request held up
    behind others should still get its full time for its own calls and retries)."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at: float | None = None

    def left(self) -> float:
        return self.seconds if self.at is None else self.at - time.monotonic()

    def waited(self, seconds: float) -> None:
        if self.at is None:
            self.at = time.monotonic() + self.seconds
        else:
            self.at += seconds


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError | openai.APITimeoutError | openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = response.headers.get(header)
        if raw is not None:
            try:
                return float(raw) / scale
            except ValueError:
                continue
    return None


class BreakerLog(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        log.warning(
            "llm_breaker", state=new.name, was=old.name if old else None, reset_s=cb.reset_timeout
        )


def halves(job: Job) -> list[Job]:
    half = len(job.indices) // 2
    return [Job(job.indices[:half], job.asks), Job(job.indices[half:], job.asks)]


def fail(result: BatchResult, indices: list[int], why: str) -> None:
    for index in indices:
        if result.scores[index] is None:
            result.errors[index] = why


def why_missing(outcome: _llm_call.CallOutcome) -> str:
    if outcome.refused:
        return "model refused"
    if outcome.timed_out:
        return "reply too slow (time-out while streaming)"
    if outcome.cut_off:
        return "reply cut off (finish_reason=length)"
    if outcome.reader.broken:
        return outcome.reader.broken
    if outcome.reader.malformed:
        return "malformed entries in reply"
    return "missing from reply"


def status_kind(exc: openai.APIStatusError) -> str:
    if exc.status_code == 429:
        return "rate_limited"
    if exc.status_code >= 500:
        return "server_error"
    return "context" if _llm_call.is_context_error(exc) else "client_error"
