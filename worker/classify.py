"""Stage 5: the LLM classifier. A batch of texts -> validated scores per item, or a failure.

Every item is accounted for: an item the reply does not answer validly is asked again in
a smaller request (a cut-off reply is not resent unchanged; a batch too large for the
model's context is split), and after that reported as failed so the policy's fallback
applies: a missing answer is never read as clean. Transient API errors are retried with
backoff (honouring Retry-After) inside a per-request deadline; how many calls are in
flight adapts to what the endpoint serves (``worker._limiter``); a circuit breaker stops
calls to an endpoint that is down. Batch size, output cap and time-out follow from the
latency budget and the endpoint's observed speed (``worker._endpoint``).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import openai
import pybreaker
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from worker import _llm_call, metrics
from worker._endpoint import CallTiming, EndpointModel
from worker._limiter import AdaptiveLimit, Signal
from worker._prompt import PROMPT_VERSION, SYSTEM_PROMPT, count_tokens
from worker._reply import Answer, ReplyError, Scores
from worker.settings import Settings

log = structlog.get_logger("worker.classify")

Item = tuple[str, str | None]  # (text, context)


@dataclass(slots=True)
class ItemUsage:
    """One item's share of the calls it was in. Estimated from its own length (its prompt
    lines, its answer) and the calls' shared parts split evenly; when a reply is
    streamed, an answer is handed on before the endpoint reports the call's usage."""

    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    calls: float = 0.0


OnScores = Callable[[list[tuple[int, Scores, ItemUsage]]], None]

__all__ = ["BatchResult", "CallUsage", "Classifier", "ItemUsage", "ReplyError"]


@dataclass(slots=True)
class CallUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0  # HTTP requests, failed ones included
    call_seconds: list[float] = field(default_factory=list)  # answered calls

    def add(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.prompt_tokens += _count(usage.get("prompt_tokens"))
        self.completion_tokens += _count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            self.cached_tokens += _count(details.get("cached_tokens"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class BatchResult:
    """Scores per item (None where the LLM gave no valid answer) and what it cost."""

    scores: list[Scores | None]
    errors: list[str | None]
    usage: CallUsage = field(default_factory=CallUsage)  # as the endpoint reported it
    items: list[ItemUsage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.items:
            self.items = [ItemUsage() for _ in self.scores]


@dataclass(slots=True)
class _Job:
    indices: list[int]  # positions in the classify() call's items
    asks: int = 0  # how often these items were asked already


class _NoCapacity(Exception):
    """No call slot became free before the deadline."""


class _Deadline:
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


_FIRST_BATCHES = 4  # items per call until the endpoint's speed is known
_QUEUE_WAIT = 10  # deadlines a call may wait for a call slot


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError | openai.APITimeoutError | openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _retry_after(exc: BaseException | None) -> float | None:
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


class _BreakerLog(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        log.warning(
            "llm_breaker", state=new.name, was=old.name if old else None, reset_s=cb.reset_timeout
        )


class Classifier:
    """Talks to any OpenAI-compatible chat completions endpoint."""

    prompt_version = PROMPT_VERSION

    def __init__(self, settings: Settings, client: openai.OpenAI | None = None) -> None:
        self.settings = settings
        self.model = settings.model
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        self._client = client or openai.OpenAI(
            api_key=api_key,
            base_url=settings.openai_base_url,
            max_retries=0,  # retries are ours: bounded by a deadline, behind a breaker
            timeout=settings.llm_timeout_s,
        )
        self.endpoint = EndpointModel(
            ttft_s=settings.llm_expected_ttft_ms / 1000,
            token_s=settings.llm_expected_token_ms / 1000,
        )
        self.limit = AdaptiveLimit(settings.concurrency, initial=min(4, settings.concurrency))
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_s,
            exclude=[self._not_a_failure],
            listeners=[_BreakerLog()],
            name="llm",
        )
        self.call_seconds: deque[float] = deque(maxlen=100_000)  # answered calls, for eval
        # the model's context in tokens: set, or learned from a 400 that says it
        self._context_tokens: int | None = settings.llm_context_tokens

    # -- planning ---------------------------------------------------------------------

    def batch_size(self) -> int:
        """Items per call now: what the latency budget allows at the observed speed
        (small until a few calls have shown that speed: the guesses may be far off)."""
        size = self.endpoint.batch_size(
            self.settings.llm_latency_budget_ms / 1000, max(self.settings.batch_size, 1)
        )
        if not self.endpoint.known:
            size = min(size, _FIRST_BATCHES)
        metrics.LLM_BATCH_TARGET.set(size)
        return size

    def _limits(self, items: int, deadline: _Deadline) -> _llm_call.CallLimits:
        max_tokens = min(self.endpoint.max_tokens(items), self.settings.llm_max_output_tokens)
        ceiling = max(0.5, min(self.settings.llm_timeout_s, deadline.left()))
        return _llm_call.CallLimits(
            max_tokens=max_tokens,
            timeout_s=self.endpoint.timeout_s(max_tokens, ceiling),
            first_token_s=self.endpoint.first_token_timeout_s(ceiling),
        )

    # -- classifying ------------------------------------------------------------------

    def classify(self, items: list[Item], on_scores: OnScores | None = None) -> BatchResult:
        """Scores for each (text, context); failures are per item, never raised.

        ``on_scores`` receives (index, scores) pairs as soon as they are known, while the
        reply is still streaming in; the returned result has them all.
        """
        result = BatchResult(scores=[None] * len(items), errors=[None] * len(items))
        jobs = deque([_Job(list(range(len(items))))])
        sizes: dict[int, int] = {}  # prompt tokens per item, counted once a context is known
        while jobs:
            job = jobs.popleft()
            if len(job.indices) > 1 and not self._fits(items, job, sizes):
                jobs.extendleft(reversed(_halves(job)))
                continue
            try:
                outcome = self._ask(items, job, result, on_scores)
            except pybreaker.CircuitBreakerError:
                for failed in (job, *jobs):
                    _fail(result, failed.indices, "circuit open: LLM endpoint failing")
                break
            except openai.APITimeoutError:
                if len(job.indices) > 1:  # sent again unchanged it would time out again
                    jobs.extendleft(reversed(_halves(job)))
                    continue
                _fail(result, job.indices, "LLM call failed: APITimeoutError")
                continue
            except openai.APIStatusError as exc:
                if _llm_call.is_context_error(exc):
                    self._learn_context(exc, items, job, sizes)
                    if len(job.indices) > 1:
                        jobs.extendleft(reversed(_halves(job)))
                        continue
                _fail(
                    result,
                    job.indices,
                    f"LLM call failed: {exc.status_code} {_llm_call.endpoint_message(exc)}",
                )
                continue
            except (openai.OpenAIError, OSError, _NoCapacity) as exc:
                _fail(result, job.indices, f"LLM call failed: {type(exc).__name__}")
                continue
            except ReplyError as exc:
                log.warning("llm_bad_reply", error=str(exc), items=len(job.indices))
                self._again(jobs, result, job, job.indices, str(exc))
                continue
            missing = [job.indices[p] for p in outcome.reader.missing()]
            if missing:
                why = _why_missing(outcome)
                log.warning(
                    "llm_items_missing",
                    error=why,
                    items=len(job.indices),
                    missing=len(missing),
                    malformed=outcome.reader.malformed,
                )
                if outcome.cut_off and len(missing) == len(job.indices):
                    if len(missing) == 1:  # asked alone and still too long: not again
                        _fail(result, missing, why)
                        continue
                    # resent unchanged it would be cut again: split it
                    jobs.extendleft(reversed(_halves(_Job(missing, job.asks))))
                    continue
                self._again(jobs, result, job, missing, why)
        return result

    def _prompt_tokens(self, items: list[Item], job: _Job, sizes: dict[int, int]) -> int:
        for index in job.indices:
            if index not in sizes:
                text, context = items[index]
                sizes[index] = count_tokens(text) + (count_tokens(context) if context else 0) + 8
        return (
            _system_tokens()
            + sum(sizes[i] for i in job.indices)
            + self.endpoint.max_tokens(len(job.indices))
        )

    def _fits(self, items: list[Item], job: _Job, sizes: dict[int, int]) -> bool:
        limit = self._context_tokens
        return limit is None or self._prompt_tokens(items, job, sizes) <= limit

    def _learn_context(
        self, exc: openai.APIStatusError, items: list[Item], job: _Job, sizes: dict[int, int]
    ) -> None:
        told = _llm_call.context_size(exc)
        tried = self._prompt_tokens(items, job, sizes)
        learned = told if told else int(tried * 0.9)
        if self._context_tokens is None or learned < self._context_tokens:
            self._context_tokens = learned
            log.warning(
                "llm_context_learned",
                context_tokens=learned,
                told=told is not None,
                error=_llm_call.endpoint_message(exc),
            )

    def _again(
        self, jobs: deque[_Job], result: BatchResult, job: _Job, indices: list[int], why: str
    ) -> None:
        if job.asks < self.settings.llm_max_asks:
            jobs.append(_Job(indices, job.asks + 1))
        else:
            _fail(result, indices, why)

    def _ask(
        self, items: list[Item], job: _Job, result: BatchResult, on_scores: OnScores | None
    ) -> _llm_call.CallOutcome:
        """One request through the transient-error retries, all within the deadline; its
        answers land in ``result``. A split or a re-ask is a new request with a deadline
        of its own (how many there can be is bounded: halves, ``llm_max_asks``)."""
        batch = [items[i] for i in job.indices]
        deadline = _Deadline(self.settings.llm_deadline_s)

        def place(answers: list[Answer], usage: dict[str, Any] | None) -> None:
            placed = []
            scale = 1.0
            if usage:  # known already (not streamed): estimates scaled to the real count
                estimated = sum(
                    self.endpoint.item_completion_tokens(a.codes, len(batch)) for a in answers
                )
                real = _count(usage.get("completion_tokens"))
                if estimated > 0 and real and len(answers) == len(batch):
                    scale = real / estimated
            for answer in answers:
                index = job.indices[answer.index]
                if result.scores[index] is None:
                    result.scores[index] = answer.scores
                    result.errors[index] = None
                    share = result.items[index]
                    share.completion_tokens += scale * self.endpoint.item_completion_tokens(
                        answer.codes, len(batch)
                    )
                    placed.append((index, answer.scores, share))
            if placed and on_scores is not None:
                on_scores(placed)

        def stop(state: RetryCallState) -> bool:
            return (
                stop_after_attempt(self.settings.llm_max_attempts)(state)
                or self._wait(state) >= deadline.left()
            )

        def retry(exc: BaseException) -> bool:  # a batch that timed out is split instead
            timed_out = isinstance(exc, openai.APITimeoutError) and len(batch) > 1
            return _is_transient(exc) and not timed_out

        for attempt in Retrying(
            stop=stop, wait=self._wait, retry=retry_if_exception(retry), reraise=True
        ):
            with attempt:
                return self._call(batch, job, place, deadline, result)
        raise AssertionError("unreachable")

    def _call(
        self,
        batch: list[Item],
        job: _Job,
        place: _llm_call.OnEntries,
        deadline: _Deadline,
        result: BatchResult,
    ) -> _llm_call.CallOutcome:
        """One HTTP request, inside a call slot and the breaker."""
        asked = time.monotonic()
        if not self.limit.acquire(timeout=_QUEUE_WAIT * deadline.seconds):
            raise _NoCapacity
        deadline.waited(time.monotonic() - asked)
        chars = [len(text) + len(context or "") + 8 for text, context in batch]
        shared = len(SYSTEM_PROMPT) / len(batch)
        for index, own in zip(job.indices, chars, strict=True):
            share = result.items[index]
            share.prompt_tokens += self.endpoint.item_prompt_tokens(own, shared)
            share.calls += 1 / len(batch)
        signal = Signal.NEUTRAL
        kind = "error"
        limits = self._limits(len(batch), deadline)
        try:
            # not breaker.call(): it holds the breaker's lock for the whole HTTP call
            with self.breaker.calling():
                outcome = _llm_call.call(
                    self._client, self.model, batch, limits, self.settings.llm_stream, place
                )
            result.usage.add(outcome.usage)
            result.usage.call_seconds.append(outcome.duration_s)
            self.call_seconds.append(outcome.duration_s)
            usage = outcome.usage or {}
            reply_tokens = outcome.reply_tokens()
            self.endpoint.observe(
                CallTiming(
                    items=len(batch),
                    duration_s=outcome.duration_s,
                    completion_tokens=_count(usage.get("completion_tokens")) or reply_tokens,
                    ttft_s=outcome.ttft_s,
                    reply_tokens_o200k=reply_tokens,
                    request_chars=sum(chars) + len(SYSTEM_PROMPT),
                    prompt_tokens=_count(usage.get("prompt_tokens")),
                )
            )
            slow = outcome.timed_out or self.endpoint.congested
            signal = Signal.OVERLOAD if slow else Signal.OK
            kind = "timeout" if outcome.timed_out else "cut_off" if outcome.cut_off else "ok"
            return outcome
        except openai.APIStatusError as exc:
            kind = _status_kind(exc)
            if exc.status_code == 429 or exc.status_code >= 500:
                signal = Signal.OVERLOAD
            log.warning(
                "llm_call_failed",
                status=exc.status_code,
                items=len(batch),
                error=_llm_call.endpoint_message(exc),
            )
            raise
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            signal = Signal.OVERLOAD
            kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
            if kind == "timeout":
                self.endpoint.timed_out(
                    limits.first_token_s if self.settings.llm_stream else limits.timeout_s,
                    len(batch),
                )
            log.warning(
                "llm_call_failed",
                error=type(exc).__name__,
                items=len(batch),
                timeout_s=round(limits.timeout_s, 2),
            )
            raise
        except ReplyError:
            kind = "bad_reply"
            raise
        except pybreaker.CircuitBreakerError:
            kind = "breaker_open"
            raise
        finally:
            if kind != "breaker_open":
                result.usage.calls += 1
            metrics.LLM_REQUESTS.labels(kind).inc()
            if self.limit.release(signal, self.endpoint.expected_s(len(batch))):
                log.info(
                    "llm_concurrency_cut",
                    limit=int(self.limit.limit),
                    cause=kind,
                    congested=self.endpoint.congested,
                    items=len(batch),
                )
            metrics.LLM_CONCURRENCY_LIMIT.set(self.limit.limit)

    def _not_a_failure(self, exc: BaseException) -> bool:
        """What the breaker does not count: the endpoint answered, or is only slow."""
        if isinstance(exc, ReplyError | openai.RateLimitError):
            return True
        if isinstance(exc, openai.APITimeoutError):
            return not self.limit.at_minimum  # fewer calls first; a breaker trip last
        return isinstance(exc, openai.APIStatusError) and _llm_call.is_context_error(exc)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc)
        if hinted is not None:
            return min(hinted, self.settings.llm_deadline_s)
        backoff = min(0.25 * 2 ** (state.attempt_number - 1), 4.0)
        return backoff / 2 + random.uniform(0, backoff / 2)  # jitter: no thundering herd


@lru_cache(maxsize=1)
def _system_tokens() -> int:
    return count_tokens(SYSTEM_PROMPT) + 16


def _halves(job: _Job) -> list[_Job]:
    half = len(job.indices) // 2
    return [_Job(job.indices[:half], job.asks), _Job(job.indices[half:], job.asks)]


def _fail(result: BatchResult, indices: list[int], why: str) -> None:
    for index in indices:
        if result.scores[index] is None:
            result.errors[index] = why


def _why_missing(outcome: _llm_call.CallOutcome) -> str:
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


def _status_kind(exc: openai.APIStatusError) -> str:
    if exc.status_code == 429:
        return "rate_limited"
    if exc.status_code >= 500:
        return "server_error"
    return "context" if _llm_call.is_context_error(exc) else "client_error"
