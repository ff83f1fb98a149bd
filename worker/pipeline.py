"""The stages in order: validate -> normalise -> rules -> cache -> classify -> policy.

``prepare`` runs the cheap, local stages for one message and either decides it
(a dead letter, a rules verdict, a local cache hit) or hands back a ``Pending`` that
needs the shared cache or the LLM. ``complete`` finishes a micro-batch of those with one
Redis round trip and one LLM call. Publishing is the caller's (the worker, or the
embedded command), so the pipeline itself never touches the broker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import structlog

from worker import metrics
from worker._prompt import truncate
from worker.cache import CachedScores, ScoreCache, cache_key
from worker.classify import BatchResult, Classifier, ItemUsage
from worker.models import (
    CATEGORIES,
    Action,
    Category,
    ModerationRequest,
    Source,
    Usage,
    Verdict,
)
from worker.normalise import cache_form
from worker.policy import (
    Policy,
    PolicyStore,
    TenantPolicy,
    decide_scores,
    fallback_action,
)
from worker.rules import RulesResult
from worker.settings import Settings
from worker.validate import DeadLetter, DeadReason, Envelope, InvalidMessage, validate

log = structlog.get_logger("worker.pipeline")


@dataclass(slots=True)
class Pending:
    """A valid request the rules could not decide; it needs scores."""

    envelope: Envelope
    request: ModerationRequest
    received: float
    policy: Policy
    tenant: TenantPolicy
    rules: RulesResult
    key: str
    llm_text: str
    truncated: bool


Outcome = Verdict | DeadLetter
Emit = Callable[[list[tuple[int, Verdict]]], None]


def _cost(
    price: tuple[float, float, float] | None, prompt: float, cached: float, completion: float
) -> float:
    if price is None:
        return 0.0
    fresh_in, cached_in, out = price
    return ((prompt - cached) * fresh_in + cached * cached_in + completion * out) / 1e6


class _Shares:
    """Turns items' estimated token shares into verdict usage (integers whose running
    sum stays true to the floats, so totals over many verdicts are not rounded away)
    and cost."""

    def __init__(self, price: tuple[float, float, float] | None) -> None:
        self._price = price
        self._prompt = self._completion = 0.0  # running float totals
        self._prompt_int = self._completion_int = 0

    def take(self, share: ItemUsage, duplicates: int) -> tuple[Usage, float]:
        prompt = share.prompt_tokens / duplicates
        completion = share.completion_tokens / duplicates
        self._prompt += prompt
        self._completion += completion
        p = round(self._prompt) - self._prompt_int
        c = round(self._completion) - self._completion_int
        self._prompt_int += p
        self._completion_int += c
        usage = Usage(prompt_tokens=p, completion_tokens=c, llm_calls=share.calls / duplicates)
        return usage, _cost(self._price, prompt, 0.0, completion)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        policies: PolicyStore,
        classifier: Classifier | None,
        cache: ScoreCache,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.classifier = classifier
        self.cache = cache
        self.model = classifier.model if classifier else None
        self._prompt_version = classifier.prompt_version if classifier else "none"
        self._inflight: dict[str, Future[tuple[float, ...] | None]] = {}
        self._inflight_lock = threading.Lock()

    # -- the local stages ---------------------------------------------------------------

    def prepare(self, envelope: Envelope, received: float | None = None) -> Outcome | Pending:
        """Validate, normalise, match rules and look in the local cache. Never raises."""
        received = time.monotonic() if received is None else received
        try:
            request = validate(envelope, self.settings)
        except InvalidMessage as exc:
            return DeadLetter(envelope, exc.reason, exc.detail)
        try:
            return self._prepare_valid(envelope, request, received)
        except Exception as exc:  # a bug must not lose the message: dead-letter it
            log.exception("prepare_failed", message_id=request.id)
            metrics.ERRORS.labels("prepare").inc()
            return DeadLetter(
                envelope, DeadReason.INTERNAL_ERROR, f"{type(exc).__name__}", request.id
            )
        finally:
            metrics.STAGE_SECONDS.labels("prepare").observe(time.monotonic() - received)

    def _prepare_valid(
        self, envelope: Envelope, request: ModerationRequest, received: float
    ) -> Verdict | Pending:
        policy = self.policies.current
        tenant = policy.for_tenant(request.tenant)
        rules = tenant.engine.match(request.text)
        if rules.action is None and not request.text.strip():
            rules = RulesResult(action=Action.ALLOW)  # nothing to moderate
        if rules.action is not None:
            return self._rules_verdict(request, envelope, received, policy, rules)
        key = cache_key(
            self.model or "none", self._prompt_version, cache_form(request.text), request.context
        )
        hit = self.cache.get_local(key)
        metrics.CACHE.labels("hit_local" if hit is not None else "miss_local").inc()
        pending_text, truncated = (
            truncate(request.text, self.settings.token_budget)
            if self.classifier
            else (request.text, False)
        )
        pending = Pending(
            envelope, request, received, policy, tenant, rules, key, pending_text, truncated
        )
        if hit is not None:
            return self._scored_verdict(pending, hit.scores, Source.CACHE, Usage(), 0.0, hit.model)
        if self.classifier is None:
            return self._fallback_verdict(pending, "LLM stage is off (no OPENAI_API_KEY/BASE_URL)")
        return pending

    # -- the batch stages ---------------------------------------------------------------

    def batch_size(self) -> int:
        """Messages per LLM call now (the latency budget at the endpoint's speed)."""
        return self.classifier.batch_size() if self.classifier else self.settings.batch_size

    def complete(self, batch: list[Pending], emit: Emit | None = None) -> list[Verdict]:
        """Shared cache, then one LLM call for the distinct texts nobody is already asking.

        ``emit`` receives (position in ``batch``, verdict) pairs as soon as each is known
        (cache hits at once, LLM answers as the reply streams in); the return value has
        every verdict, in order.
        """
        if not batch:
            return []
        started = time.monotonic()
        hits = self.cache.get_many([p.key for p in batch])
        metrics.STAGE_SECONDS.labels("cache").observe(time.monotonic() - started)
        metrics.CACHE.labels("hit_shared").inc(len(hits))
        verdicts: dict[int, Verdict] = {}
        early: list[tuple[int, Verdict]] = []
        mine: dict[str, list[int]] = {}
        theirs: list[tuple[int, Future[tuple[float, ...] | None]]] = []
        own_futures: dict[str, Future[tuple[float, ...] | None]] = {}
        with self._inflight_lock:
            for index, pending in enumerate(batch):
                hit = hits.get(pending.key)
                if hit is not None:
                    verdicts[index] = self._scored_verdict(
                        pending, hit.scores, Source.CACHE, Usage(), 0.0, hit.model
                    )
                    early.append((index, verdicts[index]))
                elif pending.key in mine:
                    mine[pending.key].append(index)
                elif pending.key in self._inflight:
                    theirs.append((index, self._inflight[pending.key]))
                else:
                    mine[pending.key] = [index]
                    own_futures[pending.key] = self._inflight[pending.key] = Future()
        if early and emit is not None:
            emit(early)
        try:
            if mine:
                verdicts.update(self._ask_llm(batch, mine, own_futures, emit))
        finally:
            with self._inflight_lock:
                for key, future in own_futures.items():
                    self._inflight.pop(key, None)
                    if not future.done():
                        future.set_result(None)
        for index, future in theirs:
            pending = batch[index]
            # the owner always settles it (its finally); the bound is for a hung thread
            scores = future.result(timeout=10 * self.settings.llm_deadline_s + 5)
            if scores is None:
                verdicts[index] = self._fallback_verdict(pending, "LLM gave no valid answer")
            else:
                verdicts[index] = self._scored_verdict(
                    pending, scores, Source.CACHE, Usage(), 0.0, self.model
                )
            if emit is not None:
                emit([(index, verdicts[index])])
        return [verdicts[i] for i in range(len(batch))]

    def _ask_llm(
        self,
        batch: list[Pending],
        mine: dict[str, list[int]],
        futures: dict[str, Future[tuple[float, ...] | None]],
        emit: Emit | None,
    ) -> dict[int, Verdict]:
        assert self.classifier is not None
        keys = list(mine)
        items = [(batch[mine[k][0]].llm_text, batch[mine[k][0]].request.context) for k in keys]
        verdicts: dict[int, Verdict] = {}
        fresh: dict[str, CachedScores] = {}
        shares = _Shares(self.settings.price(self.model))

        def on_scores(answers: list[tuple[int, tuple[float, ...], ItemUsage]]) -> None:
            out = []
            for k, scores, share in answers:
                key = keys[k]
                futures[key].set_result(scores)
                fresh[key] = CachedScores(scores, self.model or "")
                for index in mine[key]:
                    usage, cost = shares.take(share, len(mine[key]))
                    verdicts[index] = self._scored_verdict(
                        batch[index], scores, Source.LLM, usage, cost, self.model
                    )
                    out.append((index, verdicts[index]))
            if out and emit is not None:
                emit(out)

        started = time.monotonic()
        result = self.classifier.classify(items, on_scores)
        failed = []
        for k, key in enumerate(keys):
            if result.scores[k] is not None:
                continue
            futures[key].set_result(None)
            for index in mine[key]:
                usage, cost = shares.take(result.items[k], len(mine[key]))
                verdicts[index] = self._fallback_verdict(
                    batch[index], result.errors[k] or "no answer", usage, cost
                )
                failed.append((index, verdicts[index]))
        if failed and emit is not None:
            emit(failed)
        self.cache.put_many(fresh)
        self._record_llm(result, len(batch), len(items), len(failed), started)
        return verdicts

    def _record_llm(
        self, result: BatchResult, messages: int, distinct: int, failed: int, started: float
    ) -> None:
        usage = result.usage
        metrics.STAGE_SECONDS.labels("llm").observe(time.monotonic() - started)
        metrics.BATCH_SIZE.observe(distinct)
        metrics.LLM_TOKENS.labels("prompt").inc(usage.prompt_tokens)
        metrics.LLM_TOKENS.labels("completion").inc(usage.completion_tokens)
        metrics.LLM_TOKENS.labels("cached").inc(usage.cached_tokens)
        metrics.LLM_COST.inc(
            self.cost_usd(usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens)
        )
        log.info(
            "llm_batch",
            messages=messages,
            distinct=distinct,
            calls=usage.calls,
            failed=failed,
            llm_ms=round((time.monotonic() - started) * 1000, 1),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def cost_usd(self, prompt: float, cached: float, completion: float) -> float:
        return _cost(self.settings.price(self.model), prompt, cached, completion)

    def run(
        self,
        envelopes: Iterable[Envelope],
        progress: Callable[[int], None] | None = None,
        batch_size: int | None = None,
    ) -> list[Outcome]:
        """The whole pipeline in-process (the embedded command, eval and tests).

        Batches go to the LLM concurrently, as many at once as the classifier's call
        limit lets through, each as large as the latency budget allows when it starts
        (so both follow what the endpoint shows), or exactly ``batch_size``;
        ``progress(n)`` hears of every n outcomes decided.
        """
        outcomes: list[Outcome | Pending] = [self.prepare(e) for e in envelopes]
        waiting = deque(i for i, o in enumerate(outcomes) if isinstance(o, Pending))
        if progress is not None and len(outcomes) > len(waiting):
            progress(len(outcomes) - len(waiting))
        if not waiting or self.classifier is None:
            return outcomes  # type: ignore[return-value]
        limit = self.classifier.limit

        def finish(chunk: list[int]) -> list[Verdict]:
            return self.complete([outcomes[i] for i in chunk])  # type: ignore[misc]

        with ThreadPoolExecutor(
            max(self.settings.concurrency, 1), thread_name_prefix="moderate"
        ) as pool:
            running: dict[Future[list[Verdict]], list[int]] = {}
            while waiting or running:
                while waiting and len(running) < max(1, int(limit.limit)):
                    size = min(max(batch_size or self.batch_size(), 1), len(waiting))
                    chunk = [waiting.popleft() for _ in range(size)]
                    running[pool.submit(finish, chunk)] = chunk
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = running.pop(future)
                    for i, verdict in zip(chunk, future.result(), strict=True):
                        outcomes[i] = verdict
                    if progress is not None:
                        progress(len(chunk))
        return outcomes  # type: ignore[return-value]

    # -- building verdicts --------------------------------------------------------------

    def _base(
        self, request: ModerationRequest, envelope: Envelope, received: float, policy: Policy
    ) -> dict[str, Any]:
        return {
            "id": request.id,
            "tenant": request.tenant,
            "policy_version": policy.version,
            "metadata": request.metadata,
            "redelivered": envelope.redelivered,
            "latency_ms": round((time.monotonic() - received) * 1000, 3),
        }

    def _rules_verdict(
        self,
        request: ModerationRequest,
        envelope: Envelope,
        received: float,
        policy: Policy,
        rules: RulesResult,
    ) -> Verdict:
        action = rules.action or Action.ALLOW
        scores = dict.fromkeys(CATEGORIES, 0.0)
        categories = dict.fromkeys(CATEGORIES, False)
        rule = rules.rule
        if rule is not None and rule.category and action is not Action.ALLOW:
            scores[rule.category] = 1.0
            categories[rule.category] = True
        return Verdict(
            **self._base(request, envelope, received, policy),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=categories,
            category_scores=scores,
            source=Source.RULES,
            rule_matches=rules.matches,
            reason=rule.reason if rule else "empty text",
            user_reason=rule.user_reason if rule else None,
            shadow=self._shadow(request, policy, None),
        )

    def _scored_verdict(
        self,
        pending: Pending,
        scores: tuple[float, ...],
        source: Source,
        usage: Usage,
        cost: float,
        model: str | None,
    ) -> Verdict:
        by_category = dict(zip(CATEGORIES, scores, strict=True))
        action, categories = decide_scores(scores, pending.tenant.limits)
        return Verdict(
            **self._base(pending.request, pending.envelope, pending.received, pending.policy),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=categories,
            category_scores=by_category,
            source=source,
            rule_matches=pending.rules.matches,
            model=model,
            usage=usage,
            cost_usd=round(cost, 9),
            truncated=pending.truncated,
            shadow=self._shadow(pending.request, pending.policy, by_category),
        )

    def _fallback_verdict(
        self, pending: Pending, why: str, usage: Usage | None = None, cost: float = 0.0
    ) -> Verdict:
        suspected = {m.category for m in pending.rules.matches if m.category}
        fallback = pending.tenant.fallback
        if self.settings.fallback_action is not None:
            fallback = fallback.model_copy(update={"action": self.settings.fallback_action})
        action = fallback_action(fallback, suspected)
        return Verdict(
            **self._base(pending.request, pending.envelope, pending.received, pending.policy),
            action=action,
            flagged=action is not Action.ALLOW,
            categories=dict.fromkeys(CATEGORIES, False),
            category_scores=dict.fromkeys(CATEGORIES, 0.0),
            source=Source.FALLBACK,
            rule_matches=pending.rules.matches,
            reason=f"not classified: {why}",
            model=self.model,
            usage=usage or Usage(),
            cost_usd=round(cost, 9),
            truncated=pending.truncated,
        )

    def _shadow(
        self,
        request: ModerationRequest,
        policy: Policy,
        scores: dict[Category, float] | None,
    ) -> dict[str, Any] | None:
        shadow = policy.shadow
        if shadow is None:
            return None
        tenant = shadow.for_tenant(request.tenant)
        rules = tenant.engine.match(request.text)
        action: Action | None = rules.action
        if action is None and scores is not None:
            action, _ = decide_scores([scores[c] for c in CATEGORIES], tenant.limits)
        return {
            "policy_version": shadow.version,
            "action": action.value if action else None,
            "rule_ids": [m.rule_id for m in rules.matches],
        }


def build_pipeline(settings: Settings) -> Pipeline:
    """The pipeline as configured: LLM stage on only when an endpoint or key is set."""
    classifier = Classifier(settings) if settings.llm_enabled else None
    return Pipeline(
        settings,
        PolicyStore(settings.policy, settings.policy_reload_s),
        classifier,
        ScoreCache(settings.cache_size, settings.redis_url, settings.cache_ttl_s),
    )
