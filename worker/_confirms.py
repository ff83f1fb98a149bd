"""Publisher confirms as plain bookkeeping: no broker, no threads, no I/O.

A channel in confirm mode numbers its publishes 1, 2, 3... and the broker answers with
``basic.ack`` / ``basic.nack`` frames, each for one publish or (``multiple``) for every
publish up to a number. Whoever publishes registers a *group* (a batch of verdicts, or a
single test message), tells the tracker as each of its messages goes out, and feeds it
the confirm frames; the group's callback runs once, when every one of its publishes is
confirmed (``ok``) or when any is nacked or the connection drops (not ok).

The worker's publisher, the test toolkit's producer and the benchmark's all keep their
confirms here, so that the one subtle part (out-of-order and ``multiple`` confirms
without scanning everything unconfirmed) is written, and unit-tested, once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("worker.confirms")

Done = Callable[[bool], None]


@dataclass(slots=True, eq=False)
class ConfirmGroup:
    """Messages confirmed together: ``done(ok)`` runs once, when all of them are settled."""

    done: Done | None
    unpublished: int  # publishes still expected
    remaining: int  # publishes not yet confirmed (published or not)
    ok: bool = True
    settled: bool = False


def _log_callback_failure() -> None:
    log.exception("confirm_callback_failed")


class ConfirmTracker:
    """Publish sequence numbers of one channel, mapped to their groups.

    Not thread-safe: the thread that publishes on the channel also reads its frames, so
    it alone calls every method (as py-amqp runs its ``events`` callbacks).
    """

    def __init__(self, callback_failed: Callable[[], None] = _log_callback_failure) -> None:
        """``callback_failed`` runs inside the ``except`` when a group's ``done`` raises:
        a failing callback must not look like a lost connection to the caller's loop."""
        self._callback_failed = callback_failed
        self._unconfirmed: dict[int, ConfirmGroup] = {}
        # the keys of _unconfirmed, ascending: a multiple ack settles from the front,
        # not by a scan of every unconfirmed publish (thousands at full speed)
        self._tags: deque[int] = deque()
        self._open: dict[ConfirmGroup, None] = {}  # not settled yet (an ordered set)
        self.next_tag = 1
        self.acked = 0  # publishes the broker acked
        self.nacked = 0  # publishes the broker nacked

    @property
    def outstanding(self) -> int:
        """Publishes sent and not yet confirmed either way."""
        return len(self._unconfirmed)

    @property
    def open_groups(self) -> int:
        return len(self._open)

    def group(self, size: int, done: Done | None = None) -> ConfirmGroup:
        """A group of ``size`` publishes to come; an empty one is settled (ok) at once."""
        group = ConfirmGroup(done=done, unpublished=size, remaining=size)
        if size <= 0:
            self._finish(group, True)
        else:
            self._open[group] = None
        return group

    def published(self, group: ConfirmGroup) -> int:
        """Record that one of ``group``'s messages went out; returns its sequence number."""
        if group.unpublished <= 0:
            raise ValueError("more publishes than the group was opened for")
        group.unpublished -= 1
        tag = self.next_tag
        self.next_tag += 1
        if not group.settled:  # one failed already (fail_all): its confirm changes nothing
            self._unconfirmed[tag] = group
            self._tags.append(tag)
        return tag

    def publish_one(self, done: Done | None = None) -> int:
        """A group of one, published: the producer's case."""
        return self.published(self.group(1, done))

    def on_ack(self, tag: int, multiple: bool = False) -> None:
        """``basic.ack``: the channel's ``events["basic_ack"]`` callback."""
        self._settle(tag, multiple, True)

    def on_nack(self, tag: int, multiple: bool = False) -> None:
        """``basic.nack``: the channel's ``events["basic_nack"]`` callback."""
        self._settle(tag, multiple, False)

    def fail_all(self) -> None:
        """The channel is gone: every group not settled fails (once), also those with
        messages not published yet; a new channel's publishes are numbered from 1."""
        groups = list(self._open)
        self._unconfirmed.clear()
        self._tags.clear()
        self.next_tag = 1
        for group in groups:
            self._finish(group, False)

    def _settle(self, tag: int, multiple: bool, ok: bool) -> None:
        unconfirmed, tags = self._unconfirmed, self._tags
        settled: list[ConfirmGroup] = []
        if multiple:
            while tags and tags[0] <= tag:
                group = unconfirmed.pop(tags.popleft(), None)
                if group is not None:  # None: confirmed one by one earlier
                    settled.append(group)
        else:
            group = unconfirmed.pop(tag, None)
            if group is not None:
                settled.append(group)
            while tags and tags[0] not in unconfirmed:  # drop tags confirmed one by one
                tags.popleft()
        if ok:
            self.acked += len(settled)
        else:
            self.nacked += len(settled)
        for group in settled:
            group.ok = group.ok and ok
            group.remaining -= 1
            if group.remaining == 0:
                self._finish(group, group.ok)

    def _finish(self, group: ConfirmGroup, ok: bool) -> None:
        """Run a group's callback, exactly once whatever happens."""
        if group.settled:
            return
        group.settled = True
        self._open.pop(group, None)
        if group.done is None:
            return
        try:
            group.done(ok)
        except Exception:
            self._callback_failed()
