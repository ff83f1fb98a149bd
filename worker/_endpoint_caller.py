"""One HTTP request to the LLM endpoint, as the classifier makes it: inside a call slot
of the adaptive limit and the circuit breaker, with limits fitted to the batch, and
what it showed of the endpoint's speed learned (``worker._endpoint``)."""

from __future__ import annotations

import time
from collections import deque

import openai
import pybreaker
import structlog

from worker import _llm_call
from worker._batch_result import BatchResult, Job, count
from worker._call_policy import BreakerLog, Deadline, NoCapacity, status_kind
from worker._endpoint import CallTiming, EndpointModel
from worker._hooks import Hooks
from worker._limiter import AdaptiveLimit, Signal
from worker._prompt import SYSTEM_PROMPT
from worker._rate_budget import RateBudget
from worker._reply import ReplyError
from worker._server_kind import detect
from worker._tls import redis_ssl
from worker.settings import Settings

log = structlog.get_logger("worker.classify")

Item = tuple[str, str | None]  # (text, context)
_QUEUE_WAIT = 10  # deadlines a call may wait for a call slot


class EndpointCaller:
    """The endpoint's client, speed estimates, call limit and breaker."""

    def __init__(self, settings: Settings, client: openai.OpenAI | None, hooks: Hooks) -> None:
        self.settings = settings
        self.model = settings.model
        self.hooks = hooks
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        self.client = client or openai.OpenAI(
            api_key=api_key,
            base_url=settings.openai_base_url,
            max_retries=0,  # retries are the classifier's: bounded by a deadline
            timeout=settings.llm_timeout_s,
        )
        self.endpoint = EndpointModel(
            ttft_s=settings.llm_expected_ttft_ms / 1000,
            token_s=settings.llm_expected_token_ms / 1000,
        )
        self.server = detect(settings.openai_base_url, settings.llm_server)
        most = self.server.max_calls(settings.concurrency)
        self.limit = AdaptiveLimit(most, initial=min(4, most))
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_s,
            exclude=[self._not_a_failure],
            listeners=[BreakerLog()],
            name="llm",
        )
        self.call_seconds: deque[float] = deque(maxlen=100_000)  # answered calls
        self.budget = _budget(settings)

    def max_tokens(self, items: int) -> int:
        return min(self.endpoint.max_tokens(items), self.settings.llm_max_output_tokens)

    def limits(self, items: int, deadline: Deadline) -> _llm_call.CallLimits:
        max_tokens = self.max_tokens(items)
        ceiling = max(0.5, min(self.settings.llm_timeout_s, deadline.left()))
        return _llm_call.CallLimits(
            max_tokens=max_tokens,
            timeout_s=self.endpoint.timeout_s(max_tokens, ceiling),
            first_token_s=self.endpoint.first_token_timeout_s(ceiling),
        )

    def call(
        self,
        batch: list[Item],
        job: Job,
        place: _llm_call.OnEntries,
        deadline: Deadline,
        result: BatchResult,
    ) -> _llm_call.CallOutcome:
        """One HTTP request, inside a call slot and the breaker."""
        chars = [len(text) + len(context or "") + 8 for text, context in batch]
        shared = len(SYSTEM_PROMPT) / len(batch)
        prompt = [self.endpoint.item_prompt_tokens(own, shared) for own in chars]
        asked = time.monotonic()
        # the account's budget first (what the endpoint counts: the prompt and the
        # completion asked for), then a call slot; neither wait counts against the deadline
        wanted = int(sum(prompt)) + self.max_tokens(len(batch))
        if not self.budget.acquire(wanted, timeout=_QUEUE_WAIT * deadline.seconds):
            raise NoCapacity
        if not self.limit.acquire(timeout=_QUEUE_WAIT * deadline.seconds):
            raise NoCapacity
        deadline.waited(time.monotonic() - asked)
        for index, tokens in zip(job.indices, prompt, strict=True):
            share = result.items[index]
            share.prompt_tokens += tokens
            share.calls += 1 / len(batch)
        signal = Signal.NEUTRAL
        kind = "error"
        limits = self.limits(len(batch), deadline)
        try:
            # not breaker.call(): it holds the breaker's lock for the whole HTTP call
            with self.breaker.calling():
                outcome = _llm_call.call(
                    self.client, self.model, batch, limits, self.settings.llm_stream, place
                )
            self.budget.observe(outcome.rate_headers)
            result.usage.add(outcome.usage)
            result.usage.call_seconds.append(outcome.duration_s)
            self.call_seconds.append(outcome.duration_s)
            usage = outcome.usage or {}
            reply_tokens = outcome.reply_tokens()
            self.endpoint.observe(
                CallTiming(
                    items=len(batch),
                    duration_s=outcome.duration_s,
                    completion_tokens=count(usage.get("completion_tokens")) or reply_tokens,
                    ttft_s=outcome.ttft_s,
                    reply_tokens_o200k=reply_tokens,
                    request_chars=sum(chars) + len(SYSTEM_PROMPT),
                    prompt_tokens=count(usage.get("prompt_tokens")),
                )
            )
            slow = outcome.timed_out or self.endpoint.congested
            signal = Signal.OVERLOAD if slow else Signal.OK
            kind = "timeout" if outcome.timed_out else "cut_off" if outcome.cut_off else "ok"
            return outcome
        except openai.APIStatusError as exc:
            kind = status_kind(exc)
            self.budget.observe(_llm_call.rate_headers(exc.response))
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
            if self.limit.release(signal, self.endpoint.expected_s(len(batch))):
                log.info(
                    "llm_concurrency_cut",
                    limit=int(self.limit.limit),
                    cause=kind,
                    congested=self.endpoint.congested,
                    items=len(batch),
                    **self.endpoint.congestion_numbers(),
                )
            self.hooks.llm_request(kind, self.limit.limit)

    def _not_a_failure(self, exc: BaseException) -> bool:
        """What the breaker does not count: the endpoint answered, or is only slow."""
        if isinstance(exc, ReplyError | openai.RateLimitError):
            return True
        if isinstance(exc, openai.APITimeoutError):
            return not self.limit.at_minimum  # fewer calls first; a breaker trip last
        return isinstance(exc, openai.APIStatusError) and _llm_call.is_context_error(exc)


def _budget(settings: Settings) -> RateBudget:
    """The account's budget: shared through Redis when there is one and limits are set."""
    shared = None
    if settings.redis_url and (settings.llm_rpm or settings.llm_tpm):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        shared = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # a failure falls back at once (_rate_budget)
            **redis_ssl(settings, settings.redis_url),
        )
    return RateBudget(
        settings.llm_rpm,
        settings.llm_tpm,
        redis=shared,
        key=f"mod:rate:{settings.model}",
        share=settings.llm_budget_share,
    )
