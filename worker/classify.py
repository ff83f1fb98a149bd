"""Stage 5: the LLM classifier. A batch of texts -> validated scores per item, or a failure.

A reply that does not validate, is cut off or refused is never read as scores: the
missing items are asked once more, then reported as failed so the policy's fallback
applies. Transient API errors are retried with backoff (honouring Retry-After) inside
a per-message deadline, and a circuit breaker stops calls to an endpoint that is down.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson
import pybreaker
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from worker._prompt import PROMPT_VERSION, RESPONSE_FORMAT, SYSTEM_PROMPT, user_message
from worker.models import CATEGORIES
from worker.settings import Settings

log = structlog.get_logger("worker.classify")


@dataclass(slots=True)
class CallUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0

    def add(self, usage: Any) -> None:
        """Count one call; ``usage`` is the reply's ``usage`` object as parsed JSON."""
        self.calls += 1
        if not isinstance(usage, dict):
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

    scores: list[tuple[float, ...] | None]
    errors: list[str | None]
    usage: CallUsage = field(default_factory=CallUsage)


class ReplyError(Exception):
    """The reply was not a usable answer (bad JSON, cut off, refused)."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError | openai.APITimeoutError | openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    raw = response.headers.get("retry-after-ms")
    if raw is not None:
        try:
            return float(raw) / 1000
        except ValueError:
            pass
    raw = response.headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


_N_CATEGORIES = len(CATEGORIES)


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not float: the schema says integer


def parse_reply(content: str | None, expected: int) -> dict[int, tuple[float, ...]]:
    """Scores by item position; items with invalid entries are left out.

    Checked by hand after ``orjson.loads``: a pydantic model here cost more CPU than the
    rest of the reply handling, and the shape is small.
    """
    if content is None:
        raise ReplyError("empty reply")
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ReplyError("reply is not JSON") from None
    entries = reply.get("r") if isinstance(reply, dict) else None
    if not isinstance(entries, list):
        raise ReplyError("reply does not match the schema (no list 'r')")
    found: dict[int, tuple[float, ...]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ReplyError("reply does not match the schema (an entry is not an object)")
        i, s = entry.get("i"), entry.get("s")
        if not _is_int(i) or not isinstance(s, list):
            raise ReplyError("reply does not match the schema (entry without 'i' or 's')")
        if not 0 <= i < expected or i in found:
            continue
        if len(s) != _N_CATEGORIES or not all(_is_int(v) and 0 <= v <= 100 for v in s):
            continue
        found[i] = tuple(v / 100 for v in s)
    return found


def _first_choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError("reply has no choices")
    return choices[0]


class Classifier:
    """Talks to any OpenAI-compatible chat completions endpoint."""

    prompt_version = PROMPT_VERSION

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = settings.model
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=settings.openai_base_url,
            max_retries=0,  # retries are ours: bounded by a deadline, behind a breaker
            timeout=settings.llm_timeout_s,
        )
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_s,
            exclude=[lambda e: isinstance(e, ReplyError)],
            name="llm",
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc)
        if hinted is not None:
            return min(hinted, self.settings.llm_deadline_s)
        backoff = min(0.25 * 2 ** (state.attempt_number - 1), 4.0)
        return backoff / 2 + random.uniform(0, backoff / 2)  # jitter: no thundering herd

    def _call_once(self, items: list[tuple[str, str | None]], timeout: float) -> dict[str, Any]:
        """One request through the openai client; the reply body is parsed here.

        ``with_raw_response`` keeps everything the client does (auth, errors mapped to
        ``openai`` exceptions, timeouts) but skips building the typed ``ChatCompletion``
        model, which cost more CPU than the HTTP exchange itself; we read four fields.
        """
        raw = self._client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_message(items)},
            ],
            response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
            temperature=0,
            max_completion_tokens=min(
                self.settings.llm_max_output_tokens, 80 + 60 * len(items)
            ),
            timeout=timeout,
        )
        try:
            body = orjson.loads(raw.content)
        except orjson.JSONDecodeError:
            raise ReplyError("response body is not JSON") from None
        if not isinstance(body, dict):
            raise ReplyError("response body is not a JSON object")
        return body

    def _complete(self, items: list[tuple[str, str | None]], deadline: float) -> dict[str, Any]:
        """One completion, retried on transient errors until ``deadline`` (monotonic)."""

        def stop(state: RetryCallState) -> bool:
            next_wait = self._wait(state)
            return (
                stop_after_attempt(self.settings.llm_max_attempts)(state)
                or time.monotonic() + next_wait >= deadline
            )

        for attempt in Retrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        ):
            with attempt:
                remaining = max(deadline - time.monotonic(), 0.1)
                # not breaker.call(): it holds the breaker's lock for the whole HTTP call,
                # which would serialise every LLM call of the process
                with self.breaker.calling():
                    return self._call_once(items, min(self.settings.llm_timeout_s, remaining))
        raise AssertionError("unreachable")

    def classify(self, items: list[tuple[str, str | None]]) -> BatchResult:
        """Scores for each (text, context); failures are per item, never raised."""
        result = BatchResult(scores=[None] * len(items), errors=[None] * len(items))
        deadline = time.monotonic() + self.settings.llm_deadline_s
        pending = list(range(len(items)))
        for round_ in range(2):  # a bad or partial reply is asked again once
            if not pending:
                break
            try:
                response = self._complete([items[i] for i in pending], deadline)
                result.usage.add(response.get("usage"))
                choice = _first_choice(response)
                if choice.get("finish_reason") == "length":
                    raise ReplyError("reply cut off (finish_reason=length)")
                message = choice.get("message")
                if not isinstance(message, dict):
                    raise ReplyError("reply has no message")
                if message.get("refusal"):
                    raise ReplyError("model refused")
                content = message.get("content")
                found = parse_reply(content if isinstance(content, str) else None,
                                    len(pending))
            except ReplyError as exc:
                log.warning("llm_bad_reply", error=str(exc), items=len(pending), round=round_)
                for i in pending:
                    result.errors[i] = str(exc)
                continue
            except pybreaker.CircuitBreakerError:
                for i in pending:
                    result.errors[i] = "circuit open: LLM endpoint failing"
                break
            except (openai.OpenAIError, OSError) as exc:
                log.warning("llm_call_failed", error=type(exc).__name__, items=len(pending))
                for i in pending:
                    result.errors[i] = f"LLM call failed: {type(exc).__name__}"
                break
            still: list[int] = []
            for position, index in enumerate(pending):
                if position in found:
                    result.scores[index] = found[position]
                    result.errors[index] = None
                else:
                    result.errors[index] = "missing from reply"
                    still.append(index)
            pending = still
        return result

