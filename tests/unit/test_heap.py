"""The heap freezer and the cache entries it relies on: the garbage collector's full
passes must not walk the long-lived state (see worker._heap for the measured pauses)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker._heap import HeapFreezer
from worker.cache import CachedScores, ScoreCache


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it was


def test_freeze_moves_the_heap_out_of_reach_of_full_collections(unfrozen):
    assert gc.get_freeze_count() == 0
    HeapFreezer().freeze()
    assert gc.get_freeze_count() > 10_000  # everything imported so far
    assert len(gc.get_objects(2)) < gc.get_freeze_count()


def test_after_batch_freezes_once_more_and_then_never(unfrozen):
    freezer = HeapFreezer()
    freezer.freeze()
    first = gc.get_freeze_count()
    keep = [[index] for index in range(5_000)]  # state built by the first batch
    freezer.after_batch()
    second = gc.get_freeze_count()
    assert second >= first + len(keep)
    more = [[index] for index in range(5_000)]
    freezer.after_batch()
    # only after the first batch (the count may drop: frozen objects still get freed)
    assert gc.get_freeze_count() < second + len(more)
    del keep, more


def test_cached_scores_are_kept_as_objects_the_collector_does_not_track():
    cache = ScoreCache(size=10)
    cache.put_many({"k": CachedScores((0.1, 0.2), "gpt-4o-mini")})
    gc.collect()  # the collector untracks tuples of floats and strings as it meets them
    assert not any(gc.is_tracked(entry) for entry in cache._lru.values())
    assert cache.get_local("k") == CachedScores((0.1, 0.2), "gpt-4o-mini")
    assert cache.get_many(["k", "x"]) == {"k": CachedScores((0.1, 0.2), "gpt-4o-mini")}
