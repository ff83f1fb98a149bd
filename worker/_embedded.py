"""The whole pipeline in-process: the embedded command, eval and tests.

Batches go to the LLM concurrently, as many at once as the classifier's call limit lets
through, each as large as the latency budget allows when it starts (so both follow what
the endpoint shows), or exactly ``batch_size``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from worker._verdicts import Outcome, Pending
from worker.models import Verdict
from worker.validate import Envelope

if TYPE_CHECKING:
    from worker.pipeline import Pipeline

_COUNT_GROUP = 256


def run(
    pipeline: Pipeline,
    envelopes: Iterable[Envelope],
    progress: Callable[[int], None] | None = None,
    batch_size: int | None = None,
) -> list[Outcome]:
    """Every envelope's outcome, in order; ``progress(n)`` hears of every n decided."""
    outcomes: list[Outcome | Pending] = []
    group: list[Envelope] = []
    for envelope in envelopes:  # counted in groups: one Redis round trip each
        group.append(envelope)
        if len(group) == _COUNT_GROUP:
            outcomes += pipeline.prepare_many(group)
            group = []
    outcomes += pipeline.prepare_many(group)
    pipeline.flush_violations()
    waiting = deque(i for i, o in enumerate(outcomes) if isinstance(o, Pending))
    if progress is not None and len(outcomes) > len(waiting):
        progress(len(outcomes) - len(waiting))
    if not waiting or pipeline.classifier is None:
        return outcomes  # type: ignore[return-value]
    limit = pipeline.classifier.limit

    def finish(chunk: list[int]) -> list[Verdict]:
        return pipeline.complete([outcomes[i] for i in chunk])  # type: ignore[misc]

    with ThreadPoolExecutor(
        max(pipeline.settings.concurrency, 1), thread_name_prefix="moderate"
    ) as pool:
        running: dict[Future[list[Verdict]], list[int]] = {}
        while waiting or running:
            while waiting and len(running) < max(1, int(limit.limit)):
                size = min(max(batch_size or pipeline.batch_size(), 1), len(waiting))
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
