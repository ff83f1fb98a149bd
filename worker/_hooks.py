"""The points where cross-cutting concerns attach to the stages (metrics today).

The stages call these hooks instead of metrics directly, the way dramatiq's middleware
gets explicit hooks: a stage says what happened, and what is counted or logged about
it lives elsewhere (``worker.metrics.MetricsHooks``). ``Hooks`` itself does nothing,
which is what a test or an embedded run without metrics gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker._batch_result import BatchResult
    from worker.models import Verdict
    from worker.validate import DeadLetter


class Hooks:
    """Every hook a no-op; subclasses override what they need. Called from the event
    loop thread (``prepared``, ``local_cache``, ``received``, ``deferred``) and from the
    pool and publisher threads (the rest), so implementations must be thread-safe."""

    # -- pipeline -------------------------------------------------------------------

    def prepared(self, seconds: float) -> None:
        """``Pipeline.prepare`` ran for one message."""

    def local_cache(self, hit: bool) -> None:
        """The in-process cache was asked for one message's scores."""

    def shared_cache(self, seconds: float, hits: int) -> None:
        """The shared cache was asked for a batch."""

    def counted(self, seconds: float, messages: int, ok: bool) -> None:
        """The signal counters were asked for ``messages`` in one round trip (``ok``:
        Redis answered; otherwise their signals are absent)."""

    def llm_batch(
        self, result: BatchResult, distinct: int, seconds: float, cost_usd: float
    ) -> None:
        """The classifier answered (or gave up on) a batch of ``distinct`` texts."""

    def failed(self, stage: str) -> None:
        """A bug or a lost connection in ``stage``; the message is dead-lettered or
        requeued, never dropped."""

    # -- classifier -----------------------------------------------------------------

    def llm_request(self, outcome: str, limit: float) -> None:
        """One HTTP request to the endpoint ended (``outcome`` as in the metric); the
        call limit after it."""

    def batch_target(self, size: int) -> None:
        """The batch size the latency budget allows now."""

    # -- intake ---------------------------------------------------------------------

    def received(self) -> None:
        """A request was taken in (it is settled later)."""

    def settled(self, count: int) -> None:
        """``count`` requests were acked or requeued."""

    def deferred(self) -> None:
        """A request moved to the deferred queue: the LLM stage was full."""

    def dead_letter(self, dead: DeadLetter) -> None: ...

    def verdict(self, verdict: Verdict) -> None: ...

    def published(self, seconds: float, latencies: list[float], ok: bool) -> None:
        """A group of outcomes was confirmed (or not) ``seconds`` after its submission;
        ``latencies`` are its verdicts' in-worker times."""


NO_HOOKS = Hooks()
