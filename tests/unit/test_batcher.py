"""The micro-batcher on a fake clock: sizes, waits, and calls started only into free slots."""

from __future__ import annotations

from worker._batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    size: int = 4, slots: int = 2, wait_s: float = 0.03, eager_below: int = 0, largest: int = 64
):
    clock = Clock()
    started: list[list[int]] = []
    limits = {"size": size, "slots": slots, "largest": largest}
    batcher: Batcher[int] = Batcher(
        start=started.append,
        size=lambda: limits["size"],
        slots=lambda: limits["slots"],
        wait_s=lambda: wait_s,
        largest=lambda: limits["largest"],
        eager_below=eager_below,
        clock=clock,
    )
    return batcher, started, clock, limits


def test_a_full_batch_starts_at_once():
    batcher, started, _, _ = make(size=3)
    for n in range(3):
        batcher.add(n)
    assert started == [[0, 1, 2]] and batcher.held == 0 and batcher.running == 1


def test_a_partial_batch_waits_for_its_time_then_starts():
    batcher, started, clock, _ = make(size=10, wait_s=0.03)
    due = batcher.add(1)
    batcher.add(2)
    assert started == [] and due == clock.now + 0.03
    clock.now += 0.01
    assert batcher.poll() == due and started == []
    clock.now = due
    assert batcher.poll() is None and started == [[1, 2]]


def test_light_load_waits_for_nothing():
    batcher, started, _, _ = make(size=10, eager_below=1)
    batcher.add(1)
    assert started == [[1]]
    batcher.add(2)  # one running already: this one waits to be batched
    assert started == [[1]] and batcher.held == 1


def test_no_free_slot_means_fewer_fuller_calls_up_to_the_largest():
    batcher, started, clock, _ = make(size=3, slots=1, wait_s=0.01, largest=5)
    for n in range(3):
        batcher.add(n)
    assert started == [[0, 1, 2]]
    for n in range(3, 15):
        assert batcher.add(n) is None  # no slot: nothing to time, the finish will poll
    clock.now += 1
    assert batcher.poll() is None and len(started) == 1 and batcher.held == 12
    batcher.finished()  # 12 wait for one slot: a batch of the largest size, not of 3
    assert started[1] == [3, 4, 5, 6, 7] and batcher.running == 1
    batcher.finished()
    assert started[2] == [8, 9, 10, 11, 12]
    batcher.finished()  # two left: the latency budget's size again, its wait long over
    assert started[3] == [13, 14] and batcher.held == 0


def test_the_largest_batch_follows_what_the_endpoint_can_answer_in_time():
    """The full batch is asked for at each launch: an endpoint found slow (a CPU server
    whose calls took 15 s for one message) gets small batches from its backlog."""
    batcher, started, _, limits = make(size=1, slots=1, largest=64)
    batcher.add(0)
    for n in range(1, 47):
        batcher.add(n)
    limits["largest"] = 2
    batcher.finished()
    assert started[1] == [1, 2]


def test_a_moments_stall_waits_for_slots_instead_of_one_huge_batch():
    batcher, started, _, _ = make(size=3, slots=4, largest=64)
    for n in range(12):
        batcher.add(n)
    assert [len(b) for b in started] == [3, 3, 3, 3]  # every slot busy
    for n in range(12, 24):
        batcher.add(n)  # 12 wait: all four slots take them at budget size
    batcher.finished()
    assert [len(b) for b in started[4:]] == [3]
    for n in range(24, 28):
        batcher.add(n)  # 13 wait: more than every slot takes at budget size, so grow
    batcher.finished()
    assert len(started[5]) == 13


def test_with_free_slots_a_backlog_is_spread_over_them_at_budget_size():
    batcher, started, _, _ = make(size=4, slots=3, largest=64)
    for n in range(12):
        batcher.add(n)
    assert [len(b) for b in started] == [4, 4, 4]


def test_a_smaller_size_cuts_what_is_forming():
    batcher, started, _, limits = make(size=10, slots=5)
    for n in range(6):
        batcher.add(n)
    limits["size"] = 4
    batcher.poll()
    assert started == [[0, 1, 2, 3]] and batcher.held == 2


def test_a_redelivery_goes_alone_and_flush_starts_everything():
    batcher, started, _, _ = make(size=10, slots=1)
    batcher.add(1)
    batcher.alone(99)
    assert started == [[99]]
    batcher.add(2)
    batcher.flush()  # shutdown: slots or not
    assert started == [[99], [1, 2]] and batcher.held == 0
