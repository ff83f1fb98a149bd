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

import itertools
import random
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import openai
import pybreaker
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from worker import _llm_call
from worker._batch_result import BatchResult, CallUsage, ItemUsage, Job, count
from worker._call_policy import (
    Deadline,
    NoCapacity,
    fail,
    halves,
    is_transient,
    retry_after,
    why_missing,
)
from worker._endpoint_caller import EndpointCaller
from worker._hooks import NO_HOOKS, Hooks
from worker._prompt import PROMPT_VERSION, SYSTEM_PROMPT, count_tokens
from worker._reply import Answer, ReplyError, Scores
from worker.settings import Settings

log = structlog.get_logger("worker.classify")

Item = tuple[str, str | None]  # (text, context)


OnScores = Callable[[list[tuple[int, Scores, ItemUsage]]], None]

__all__ = ["BatchResult", "CallUsage", "Classifier", "ItemUsage", "ReplyError"]


# items per call until the endpoint's speed is known, in turn: sizes that differ, so
# the first calls show how the first token grows with the items (a CPU server's prefill)
_FIRST_BATCHES = (2, 6)


class Classifier:
    """Talks to any OpenAI-compatible chat completions endpoint."""

    prompt_version = PROMPT_VERSION

    def __init__(
        self, settings: Settings, client: openai.OpenAI | None = None, hooks: Hooks = NO_HOOKS
    ) -> None:
        self.hooks = hooks
        self.settings = settings
        self.model = settings.model
        self.caller = EndpointCaller(settings, client, hooks)
        self.endpoint = self.caller.endpoint
        self.limit = self.caller.limit
        self.breaker = self.caller.breaker
        self.call_seconds = self.caller.call_seconds  # answered calls, for eval
        # the model's context in tokens: set, or learned from a 400 that says it
        self._context_tokens: int | None = settings.llm_context_tokens
        self._first_batches = itertools.cycle(_FIRST_BATCHES)
        # the most items per call the model answers well (see ``_learn_quality``)
        self._largest = max(settings.batch_size, 1)
        self.quality_cap = float(self._largest)
        self._bad_calls = 0  # calls in a row with many bad entries, and the largest
        self._bad_size = 0

    # -- planning ---------------------------------------------------------------------

    def batch_size(self) -> int:
        """Items per call now: what the latency budget allows at the observed speed
        (small until a few calls have shown that speed: the guesses may be far off)."""
        size = self.endpoint.batch_size(self.settings.llm_latency_budget_ms / 1000, self._largest)
        if not self.endpoint.known:
            size = min(size, next(self._first_batches))
        size = max(1, min(size, int(self.quality_cap)))
        self.hooks.batch_target(size)
        return size

    def backlog_batch_size(self) -> int:
        """Items per call while a backlog waits: the configured full batch (fewest
        prompt tokens per message), but no more than a call expected, cautiously, to
        end within half its time-out: a call that times out costs its whole wait and is
        then split anyway."""
        ceiling = min(self.settings.llm_timeout_s, self.settings.llm_deadline_s)
        largest = max(1, min(self._largest, int(self.quality_cap)))
        return self.endpoint.most_items_within(ceiling / 2, largest)

    def _learn_quality(self, items: int, bad: int) -> None:
        """A small model answers a long list worse than a short one: when two calls in a
        row have more than a quarter of their entries missing or malformed, calls are
        capped at half the larger of them (one such reply may be a glitch, and a cap
        for it would cost every later call prompt tokens); a clean answer at the cap
        raises it by one, as the call limit grows. Gemma-3-270M wrote 1 bad entry in
        10 at 2-5 items and 7-12 in 9-14."""
        cap = self.quality_cap
        if items >= 2 and bad * 4 > items:
            self._bad_calls += 1
            self._bad_size = max(self._bad_size, items)
            new = max(1.0, min(cap, self._bad_size / 2))
            if self._bad_calls >= 2 and new < cap:
                self.quality_cap = new
                log.info("llm_batch_capped", items=items, bad=bad, cap=int(new))
            return
        self._bad_calls, self._bad_size = 0, 0
        if bad == 0 and items >= int(cap):
            self.quality_cap = min(float(self._largest), cap + 1)

    # -- classifying ------------------------------------------------------------------

    def classify(self, items: list[Item], on_scores: OnScores | None = None) -> BatchResult:
        """Scores for each (text, context); failures are per item, never raised.

        ``on_scores`` receives (index, scores) pairs as soon as they are known, while the
        reply is still streaming in; the returned result has them all.
        """
        result = BatchResult(scores=[None] * len(items), errors=[None] * len(items))
        jobs = deque([Job(list(range(len(items))))])
        sizes: dict[int, int] = {}  # prompt tokens per item, counted once a context is known
        while jobs:
            job = jobs.popleft()
            if len(job.indices) > 1 and not self._fits(items, job, sizes):
                jobs.extendleft(reversed(halves(job)))
                continue
            try:
                outcome = self._ask(items, job, result, on_scores)
            except pybreaker.CircuitBreakerError:
                for failed in (job, *jobs):
                    fail(result, failed.indices, "circuit open: LLM endpoint failing")
                break
            except openai.APITimeoutError:
                if len(job.indices) > 1:  # sent again unchanged it would time out again
                    jobs.extendleft(reversed(halves(job)))
                    continue
                fail(result, job.indices, "LLM call failed: APITimeoutError")
                continue
            except openai.APIStatusError as exc:
                if _llm_call.is_context_error(exc):
                    self._learn_context(exc, items, job, sizes)
                    if len(job.indices) > 1:
                        jobs.extendleft(reversed(halves(job)))
                        continue
                fail(
                    result,
                    job.indices,
                    f"LLM call failed: {exc.status_code} {_llm_call.endpoint_message(exc)}",
                )
                continue
            except (openai.OpenAIError, OSError, NoCapacity) as exc:
                fail(result, job.indices, f"LLM call failed: {type(exc).__name__}")
                continue
            except ReplyError as exc:
                log.warning("llm_bad_reply", error=str(exc), items=len(job.indices))
                self._again(jobs, result, job, job.indices, str(exc))
                continue
            missing = [job.indices[p] for p in outcome.reader.missing()]
            if not outcome.cut_off:  # a reply cut short says nothing of its quality
                self._learn_quality(len(job.indices), len(missing))
            if missing:
                why = why_missing(outcome)
                log.warning(
                    "llm_items_missing",
                    error=why,
                    items=len(job.indices),
                    missing=len(missing),
                    malformed=outcome.reader.malformed,
                )
                if outcome.cut_off and len(missing) == len(job.indices):
                    if len(missing) == 1:  # asked alone and still too long: not again
                        fail(result, missing, why)
                        continue
                    # resent unchanged it would be cut again: split it
                    jobs.extendleft(reversed(halves(Job(missing, job.asks))))
                    continue
                self._again(jobs, result, job, missing, why)
        return result

    def _prompt_tokens(self, items: list[Item], job: Job, sizes: dict[int, int]) -> int:
        for index in job.indices:
            if index not in sizes:
                text, context = items[index]
                sizes[index] = count_tokens(text) + (count_tokens(context) if context else 0) + 8
        return (
            _system_tokens()
            + sum(sizes[i] for i in job.indices)
            + self.endpoint.max_tokens(len(job.indices))
        )

    def _fits(self, items: list[Item], job: Job, sizes: dict[int, int]) -> bool:
        limit = self._context_tokens
        return limit is None or self._prompt_tokens(items, job, sizes) <= limit

    def _learn_context(
        self, exc: openai.APIStatusError, items: list[Item], job: Job, sizes: dict[int, int]
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
        self, jobs: deque[Job], result: BatchResult, job: Job, indices: list[int], why: str
    ) -> None:
        if job.asks < self.settings.llm_max_asks:
            again = Job(indices, job.asks + 1)
            # in smaller requests: what the model got wrong in a long list, it gets
            # right more often in a short one
            jobs.extend(halves(again) if len(indices) > 2 else [again])
        else:
            fail(result, indices, why)

    def _ask(
        self, items: list[Item], job: Job, result: BatchResult, on_scores: OnScores | None
    ) -> _llm_call.CallOutcome:
        """One request through the transient-error retries, all within the deadline; its
        answers land in ``result``. A split or a re-ask is a new request with a deadline
        of its own (how many there can be is bounded: halves, ``llm_max_asks``)."""
        batch = [items[i] for i in job.indices]
        deadline = Deadline(self.settings.llm_deadline_s)

        def place(answers: list[Answer], usage: dict[str, Any] | None) -> None:
            placed = []
            scale = 1.0
            if usage:  # known already (not streamed): estimates scaled to the real count
                estimated = sum(
                    self.endpoint.item_completion_tokens(a.codes, len(batch)) for a in answers
                )
                real = count(usage.get("completion_tokens"))
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
            return is_transient(exc) and not timed_out

        for attempt in Retrying(
            stop=stop, wait=self._wait, retry=retry_if_exception(retry), reraise=True
        ):
            with attempt:
                return self.caller.call(batch, job, place, deadline, result)
        raise AssertionError("unreachable")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after(exc)
        if hinted is not None:
            return min(hinted, self.settings.llm_deadline_s)
        backoff = min(0.25 * 2 ** (state.attempt_number - 1), 4.0)
        return backoff / 2 + random.uniform(0, backoff / 2)  # jitter: no thundering herd


@lru_cache(maxsize=1)
def _system_tokens() -> int:
    return count_tokens(SYSTEM_PROMPT) + 16
