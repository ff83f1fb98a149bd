"""ConfirmTracker against a fake channel: confirms in any order, no broker."""

from __future__ import annotations

import random

import pytest

from worker._confirms import ConfirmTracker


class FakeChannel:
    """Numbers publishes as a confirm-mode channel does and confirms them on demand."""

    def __init__(self, tracker: ConfirmTracker) -> None:
        self.tracker = tracker
        self.sent = 0

    def publish(self, count: int, done: object = None) -> list[int]:
        group = self.tracker.group(count, done)  # type: ignore[arg-type]
        tags = []
        for _ in range(count):
            self.sent += 1
            tag = self.tracker.published(group)
            assert tag == self.sent, "the tracker's numbers are the channel's"
            tags.append(tag)
        return tags

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.tracker.on_ack(tag, multiple)

    def nack(self, tag: int, multiple: bool = False) -> None:
        self.tracker.on_nack(tag, multiple)


class Results:
    def __init__(self) -> None:
        self.calls: dict[str, list[bool]] = {}

    def done(self, name: str):
        self.calls[name] = []
        return self.calls[name].append


@pytest.fixture
def setup() -> tuple[ConfirmTracker, FakeChannel, Results]:
    tracker = ConfirmTracker()
    return tracker, FakeChannel(tracker), Results()


def test_a_group_of_one_settles_on_its_ack(setup):
    tracker, channel, r = setup
    (tag,) = channel.publish(1, r.done("a"))
    assert tracker.outstanding == 1 and r.calls["a"] == []
    channel.ack(tag)
    assert r.calls["a"] == [True]
    assert tracker.outstanding == 0 and tracker.open_groups == 0
    assert (tracker.acked, tracker.nacked) == (1, 0)


def test_a_group_of_many_waits_for_all_of_it(setup):
    _, channel, r = setup
    tags = channel.publish(5, r.done("g"))
    for tag in tags[:-1]:
        channel.ack(tag)
        assert r.calls["g"] == []
    channel.ack(tags[-1])
    assert r.calls["g"] == [True]


def test_an_empty_group_settles_at_once(setup):
    tracker, channel, r = setup
    channel.publish(0, r.done("empty"))
    assert r.calls["empty"] == [True]
    assert tracker.outstanding == 0 and tracker.open_groups == 0
    assert tracker.next_tag == 1  # it took no sequence number


def test_a_multiple_ack_covers_every_group_up_to_its_tag(setup):
    tracker, channel, r = setup
    channel.publish(2, r.done("a"))  # 1, 2
    channel.publish(3, r.done("b"))  # 3, 4, 5
    channel.publish(1, r.done("c"))  # 6
    channel.ack(4, multiple=True)
    assert r.calls == {"a": [True], "b": [], "c": []}
    channel.ack(6, multiple=True)
    assert r.calls == {"a": [True], "b": [True], "c": [True]}
    assert tracker.outstanding == 0 and tracker.acked == 6


def test_out_of_order_single_and_multiple_acks(setup):
    tracker, channel, r = setup
    channel.publish(3, r.done("a"))  # 1, 2, 3
    channel.publish(3, r.done("b"))  # 4, 5, 6
    channel.ack(5)
    channel.ack(2)
    channel.ack(6)
    assert tracker.outstanding == 3  # 1, 3, 4
    channel.ack(3, multiple=True)  # 1 and 3 (2 already): a complete
    assert r.calls == {"a": [True], "b": []}
    channel.ack(6, multiple=True)  # only 4 is left below it
    assert r.calls == {"a": [True], "b": [True]}
    assert tracker.acked == 6  # every publish counted once
    channel.ack(6, multiple=True)  # a repeat or stray confirm changes nothing
    channel.ack(99)
    assert r.calls == {"a": [True], "b": [True]} and tracker.acked == 6


def test_a_nack_in_a_group_fails_it_once_and_only_it(setup):
    tracker, channel, r = setup
    channel.publish(3, r.done("a"))  # 1, 2, 3
    channel.publish(2, r.done("b"))  # 4, 5
    channel.nack(2)
    assert r.calls["a"] == []  # still waits for the rest of it
    channel.ack(5, multiple=True)
    assert r.calls == {"a": [False], "b": [True]}
    assert (tracker.acked, tracker.nacked) == (4, 1)


def test_a_multiple_nack_fails_every_group_it_covers(setup):
    _, channel, r = setup
    channel.publish(2, r.done("a"))
    channel.publish(2, r.done("b"))
    channel.publish(1, r.done("c"))
    channel.ack(1)
    channel.nack(4, multiple=True)
    channel.ack(5)
    assert r.calls == {"a": [False], "b": [False], "c": [True]}


def test_fail_all_fails_open_groups_once_and_numbers_from_one_again(setup):
    tracker, channel, r = setup
    channel.publish(2, r.done("confirmed"))
    channel.ack(2, multiple=True)
    channel.publish(2, r.done("half"))  # 3, 4
    channel.ack(3)
    channel.publish(1, r.done("none"))  # 5
    waiting = tracker.group(3, r.done("unpublished"))  # opened, nothing sent yet
    tracker.fail_all()
    assert r.calls == {
        "confirmed": [True],
        "half": [False],
        "none": [False],
        "unpublished": [False],
    }
    assert tracker.outstanding == 0 and tracker.open_groups == 0
    assert tracker.next_tag == 1
    channel.ack(4)  # a late confirm from the old channel's numbering: nothing fails twice
    tracker.fail_all()
    assert all(len(calls) == 1 for calls in r.calls.values())
    # the failed group's remaining publishes, if the caller still makes them, are ignored
    assert tracker.published(waiting) == 1
    assert tracker.outstanding == 0
    channel.sent = 1  # a new channel, whose number 1 that publish took
    channel.publish(1, r.done("next"))
    channel.ack(2)
    assert r.calls["next"] == [True]


def test_a_failing_callback_is_reported_and_the_rest_still_settle():
    reported: list[str] = []

    def callback_failed() -> None:
        import sys

        reported.append(type(sys.exc_info()[1]).__name__)

    tracker = ConfirmTracker(callback_failed=callback_failed)
    channel = FakeChannel(tracker)
    seen: list[bool] = []

    def boom(ok: bool) -> None:
        raise RuntimeError("callback bug")

    channel.publish(1, boom)
    channel.publish(1, seen.append)
    channel.ack(2, multiple=True)
    assert reported == ["RuntimeError"]
    assert seen == [True]


def test_more_publishes_than_the_group_holds_is_an_error(setup):
    tracker, _, _ = setup
    group = tracker.group(1)
    tracker.published(group)
    with pytest.raises(ValueError):
        tracker.published(group)


def test_groups_without_a_callback_count_only(setup):
    tracker, _, _ = setup
    for _ in range(4):
        tracker.publish_one()
    tracker.on_nack(2)
    tracker.on_ack(4, multiple=True)
    assert (tracker.acked, tracker.nacked, tracker.outstanding) == (3, 1, 0)


def test_random_confirm_orders_settle_every_group_exactly_once():
    rng = random.Random(7)
    for _ in range(200):
        tracker = ConfirmTracker()
        channel = FakeChannel(tracker)
        results: dict[int, list[bool]] = {}
        owner: dict[int, int] = {}
        for g in range(rng.randint(1, 8)):
            results[g] = []
            for tag in channel.publish(rng.randint(0, 5), results[g].append):
                owner[tag] = g
        nacked = {t for t in owner if rng.random() < 0.1}
        pending = sorted(owner)
        while pending:
            tag = rng.choice(pending)
            covered = [t for t in pending if t <= tag] if rng.random() < 0.5 else [tag]
            ok = not (set(covered) & nacked)
            if len(covered) > 1 and not ok:  # a multiple frame is all-ack or all-nack
                covered, ok = [tag], tag not in nacked
            (channel.ack if ok else channel.nack)(tag, multiple=len(covered) > 1)
            pending = [t for t in pending if t not in covered]
        assert tracker.outstanding == 0 and tracker.open_groups == 0
        for g, calls in results.items():
            tags = [t for t, o in owner.items() if o == g]
            assert calls == [not (set(tags) & nacked)], (g, tags, nacked)
        assert tracker.acked + tracker.nacked == len(owner)
