"""Held review verdicts go out together: at 64 items at once, else when the timer fires."""

from __future__ import annotations

from typing import Any

from worker._review_hold import GROUP, WAIT_S, Held, ReviewHold


class Loop:
    def __init__(self) -> None:
        self.soon: list[Any] = []
        self.later: list[tuple[float, Any]] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        self.later.append((delay, callback))

    def run(self) -> None:
        while self.soon:
            self.soon.pop(0)()
        while self.later:
            self.later.pop(0)[1]()


def held(n: int, tag: str) -> Held:
    return Held([f"{tag}-out"], [(f"{tag}-{i}", None) for i in range(n)], [tag], [0.1])  # type: ignore[list-item]


def test_groups_wait_for_the_timer_and_go_as_one() -> None:
    loop, submitted = Loop(), []
    hold = ReviewHold(loop, submitted.append)  # type: ignore[arg-type]
    hold.add(held(1, "a"))
    hold.add(held(2, "b"))
    assert submitted == [] and len(loop.soon) == 1  # armed once
    loop.soon.pop()()
    assert loop.later[0][0] == WAIT_S
    loop.run()
    (merged,) = submitted
    assert merged.out == ["a-out", "b-out"] and merged.messages == ["a", "b"]
    assert len(merged.reviews) == 3 and merged.latencies == [0.1, 0.1]


def test_a_full_group_goes_at_once_and_flush_sends_the_rest() -> None:
    loop, submitted = Loop(), []
    hold = ReviewHold(loop, submitted.append)  # type: ignore[arg-type]
    hold.add(held(GROUP - 1, "a"))
    hold.add(held(1, "b"))
    assert len(submitted) == 1 and len(submitted[0].reviews) == GROUP
    hold.add(held(1, "c"))
    hold.flush()  # at shutdown
    assert [h.messages for h in submitted] == [["a", "b"], ["c"]]
    loop.run()  # the timers fire on nothing
    assert len(submitted) == 2
