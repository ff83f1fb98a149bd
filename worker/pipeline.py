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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from worker import _disk_cache, _embedded
from worker._batch_result import BatchResult, ItemUsage
from worker._costs import TokenShares, cost_usd
from worker._hooks import NO_HOOKS, Hooks
from worker._prompt import truncate
from worker._tls import redis_ssl
from worker._verdicts import Emit, Outcome, Pending, VerdictBuilder, Violation
from worker.cache import CachedScores, ScoreCache, cache_key
from worker.language import LanguageDetector, LazyLanguage
from worker.models import Action, ModerationRequest, Source, Usage, Verdict
from worker.normalise import cache_form
from worker.policy import Policy, PolicyStore
from worker.rules import RulesResult
from worker.settings import Settings
from worker.signals import Message, SignalCounter, Signals, digest
from worker.validate import DeadLetter, DeadReason, Envelope, InvalidMessage, validate

if TYPE_CHECKING:
    from worker.classify import Classifier
    from worker.reviews import Override, Overrides

__all__ = ["DeadLetter", "Emit", "Outcome", "Pending", "Pipeline", "build_pipeline"]

log = structlog.get_logger("worker.pipeline")

UNCOUNTED: Final[Any] = object()  # ``prepare`` counts the message itself
_MAX_VIOLATIONS = 10_000  # waiting to be recorded; beyond, the oldest are dropped


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        policies: PolicyStore,
        classifier: Classifier | None,
        cache: ScoreCache,
        hooks: Hooks = NO_HOOKS,
        signals: SignalCounter | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.policies = policies
        self.classifier = classifier
        self.cache = cache
        self.model = classifier.model if classifier else None
        self._prompt_version = classifier.prompt_version if classifier else "none"
        self._inflight: dict[str, Future[tuple[float, ...] | None]] = {}
        self._inflight_lock = threading.Lock()
        self.signals = signals
        self.overrides: Overrides | None = None  # set by the Reviews step (worker.reviews)
        self._violations: deque[Violation] = deque(maxlen=_MAX_VIOLATIONS)
        self.verdicts = VerdictBuilder(settings, self.model, self._violations.append)
        self.languages = LanguageDetector() if settings.language_detection else None

    # -- the local stages ---------------------------------------------------------------

    def admit(self, envelope: Envelope) -> ModerationRequest | DeadLetter:
        """The valid request an envelope holds, or its dead letter."""
        try:
            return validate(envelope, self.settings)
        except InvalidMessage as exc:
            return DeadLetter(envelope, exc.reason, exc.detail)

    def needs_counts(self) -> bool:
        """Whether the policy in force has rules on counts (rate, duplicate, history)."""
        return self.policies.current.windows is not None

    def count(self, requests: Sequence[ModerationRequest]) -> list[Signals | None]:
        """Each request's counts, in one Redis round trip for all of them (which also
        records the violations decided since the last one); ``None`` for a request
        with an author when Redis could not be asked. Any thread."""
        policy = self.policies.current
        windows = policy.windows
        if windows is None:
            return [Signals()] * len(requests)
        authored = [i for i, r in enumerate(requests) if r.author is not None]
        out: list[Signals | None] = [Signals()] * len(requests)
        if self.signals is None:
            for i in authored:
                out[i] = None
            return out
        violations = self._take_violations()
        messages = [
            Message(r.id, r.tenant, r.author.id if r.author else None, cache_form(r.text))
            for r in (requests[i] for i in authored)
        ]
        started = time.monotonic()
        counted = self.signals.observe(messages, windows, violations)
        self.hooks.counted(time.monotonic() - started, len(messages), self.signals.available)
        for i, found in zip(authored, counted, strict=True):
            out[i] = found
        return out

    def _take_violations(self) -> list[Message]:
        taken: list[Message] = []
        while self._violations:
            try:
                tenant, author, request_id = self._violations.popleft()
            except IndexError:
                break
            taken.append(Message(request_id, tenant, author, ""))
        return taken

    def flush_violations(self) -> None:
        """Record the violations decided since the last count (at shutdown, in tests)."""
        policy = self.policies.current
        if self.signals is not None and policy.windows is not None:
            self.signals.observe([], policy.windows, self._take_violations())

    def prepare_many(
        self, envelopes: Sequence[Envelope], received: Sequence[float] | None = None
    ) -> list[Outcome | Pending]:
        """``prepare`` for each, with one counters round trip for all of them."""
        admitted = [self.admit(e) for e in envelopes]
        valid = [a for a in admitted if isinstance(a, ModerationRequest)]
        counts = iter(self.count(valid) if valid else [])
        out: list[Outcome | Pending] = []
        for n, (envelope, request) in enumerate(zip(envelopes, admitted, strict=True)):
            if isinstance(request, DeadLetter):
                out.append(request)
                continue
            found = next(counts)
            out.append(self.prepare(envelope, received[n] if received else None, request, found))
        return out

    def prepare(
        self,
        envelope: Envelope,
        received: float | None = None,
        admitted: ModerationRequest | None = None,
        counts: Signals | None = UNCOUNTED,
    ) -> Outcome | Pending:
        """Validate (unless ``admitted``), count (unless ``counts`` are given: a batch's
        caller counts them all at once), normalise, match rules and look in the local
        cache. Never raises."""
        received = time.monotonic() if received is None else received
        if admitted is None:
            found = self.admit(envelope)
            if isinstance(found, DeadLetter):
                return found
            admitted = found
        request = admitted
        # every record logged while this message is handled says which one it is
        # (structlog's contextvars reach stdlib records too: worker._logging)
        bound = bind_contextvars(message_id=request.id, tenant=request.tenant)
        try:
            if counts is UNCOUNTED:
                counts = self.count([request])[0]
            return self._prepare_valid(envelope, request, received, counts)
        except Exception as exc:  # a bug must not lose the message: dead-letter it
            log.exception("prepare_failed", message_id=request.id)
            self.hooks.failed("prepare")
            return DeadLetter(
                envelope, DeadReason.INTERNAL_ERROR, f"{type(exc).__name__}", request.id
            )
        finally:
            reset_contextvars(**bound)
            self.hooks.prepared(time.monotonic() - received)

    def _prepare_valid(
        self,
        envelope: Envelope,
        request: ModerationRequest,
        received: float,
        counts: Signals | None,
    ) -> Verdict | Pending:
        policy = self.policies.current
        tenant = policy.for_tenant(request.tenant)
        language = LazyLanguage(request.text, self.languages, request.language)
        earlier: Override | None = None
        if self.overrides is not None and len(self.overrides):
            text_digest = digest(cache_form(request.text))
            found = self.overrides.get(request.tenant, policy.version, text_digest)
            if found is not None:  # a person decided this text: no rule or LLM overrules
                return self.verdicts.human(
                    request, envelope, received, policy, found, language.code
                )
            earlier = self.overrides.earlier(request.tenant, text_digest)
        rules = tenant.engine.match(request.text, language=language)
        if rules.action is None and not request.text.strip():
            rules = RulesResult(action=Action.ALLOW)  # nothing to moderate
        decision = tenant.signals.evaluate(
            request, counts, [m.rule_id for m in rules.matches], lambda: language.code
        )
        if rules.action is not None:
            return self.verdicts.rules(
                request, envelope, received, policy, rules, language.code, tenant, decision, earlier
            )
        context = self._context(request, policy)
        key = cache_key(
            self.model or "none", self._prompt_version, cache_form(request.text), context
        )
        hit = self.cache.get_local(key)
        self.hooks.local_cache(hit is not None)
        pending_text, truncated = (
            truncate(request.text, self.settings.token_budget)
            if self.classifier
            else (request.text, False)
        )
        pending = Pending(
            envelope,
            request,
            received,
            policy,
            tenant,
            rules,
            key,
            pending_text,
            truncated,
            language.code,
            decision,
            context,
            earlier,
        )
        if decision.stop:  # a signal rule decided: no LLM call
            return self.verdicts.rules_floor(pending)
        if hit is not None:
            return self.verdicts.scored(pending, hit.scores, Source.CACHE, Usage(), 0.0, hit.model)
        if self.classifier is None:
            if rules.floor is not None:
                return self.verdicts.rules_floor(pending)
            return self.verdicts.fallback(pending, "LLM stage is off (no OPENAI_API_KEY/BASE_URL)")
        return pending

    def _context(self, request: ModerationRequest, policy: Policy) -> str | None:
        """What the LLM sees beside the text: the request's context and, for a reply
        (or always, as the policy says), the previous messages' text, within the
        context budget. It is part of the cache key, since it changes the answer."""
        parts = [request.context] if request.context else []
        if request.previous and (
            policy.llm_context == "always"
            or (policy.llm_context == "replies" and request.reply_to is not None)
        ):
            parts += [m.text for m in request.previous if m.text.strip()]
        if not parts:
            return None
        context = "\n".join(parts)
        if self.classifier is None:
            return context
        return truncate(context, self.settings.context_token_budget)[0]

    # -- the batch stages ---------------------------------------------------------------

    def batch_size(self) -> int:
        """Messages per LLM call now (the latency budget at the endpoint's speed)."""
        return self.classifier.batch_size() if self.classifier else self.settings.batch_size

    def backlog_batch_size(self) -> int:
        """Messages per LLM call while a backlog waits (full batches the endpoint can
        answer within its time-out)."""
        return self.classifier.backlog_batch_size() if self.classifier else self.settings.batch_size

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
        self.hooks.shared_cache(time.monotonic() - started, len(hits))
        verdicts: dict[int, Verdict] = {}
        early: list[tuple[int, Verdict]] = []
        mine: dict[str, list[int]] = {}
        theirs: list[tuple[int, Future[tuple[float, ...] | None]]] = []
        own_futures: dict[str, Future[tuple[float, ...] | None]] = {}
        with self._inflight_lock:
            for index, pending in enumerate(batch):
                hit = hits.get(pending.key)
                if hit is not None:
                    verdicts[index] = self.verdicts.scored(
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
                verdicts[index] = self.verdicts.fallback(pending, "LLM gave no valid answer")
            else:
                verdicts[index] = self.verdicts.scored(
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
        items = [(batch[mine[k][0]].llm_text, batch[mine[k][0]].context) for k in keys]
        verdicts: dict[int, Verdict] = {}
        fresh: dict[str, CachedScores] = {}
        shares = TokenShares(self.settings.price(self.model))

        def on_scores(answers: list[tuple[int, tuple[float, ...], ItemUsage]]) -> None:
            out = []
            for k, scores, share in answers:
                key = keys[k]
                futures[key].set_result(scores)
                fresh[key] = CachedScores(scores, self.model or "")
                for index in mine[key]:
                    usage, cost = shares.take(share, len(mine[key]))
                    verdicts[index] = self.verdicts.scored(
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
                verdicts[index] = self.verdicts.fallback(
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
        seconds = time.monotonic() - started
        cost = self.cost_usd(usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens)
        self.hooks.llm_batch(result, distinct, seconds, cost)
        log.info(
            "llm_batch",
            messages=messages,
            distinct=distinct,
            calls=usage.calls,
            failed=failed,
            llm_ms=round(seconds * 1000, 1),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def cost_usd(self, prompt: float, cached: float, completion: float) -> float:
        return cost_usd(self.settings.price(self.model), prompt, cached, completion)

    def run(
        self,
        envelopes: Iterable[Envelope],
        progress: Callable[[int], None] | None = None,
        batch_size: int | None = None,
    ) -> list[Outcome]:
        """The whole pipeline in-process (``worker._embedded``)."""
        return _embedded.run(self, envelopes, progress, batch_size)


def build_pipeline(settings: Settings, hooks: Hooks | None = None) -> Pipeline:
    """The pipeline as configured: LLM stage on only when an endpoint or key is set;
    its reports go to ``hooks`` (Prometheus metrics unless given)."""
    if hooks is None:
        from worker.metrics import MetricsHooks

        hooks = MetricsHooks()
    _disk_cache.configure(settings.cache_dir)  # before the policy compiles
    classifier = None
    if settings.llm_enabled:  # the openai client's import alone is ~0.5 s of a start
        from worker.classify import Classifier

        classifier = Classifier(settings, hooks=hooks)
    signals = None
    if settings.redis_url:
        signals = SignalCounter.from_url(
            settings.redis_url, redis_ssl(settings, settings.redis_url)
        )
    return Pipeline(
        settings,
        PolicyStore(settings.policy, settings.policy_reload_s),
        classifier,
        ScoreCache(
            settings.cache_size,
            settings.redis_url,
            settings.cache_ttl_s,
            redis_ssl(settings, settings.redis_url),
        ),
        hooks,
        signals,
    )
