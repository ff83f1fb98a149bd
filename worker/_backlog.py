"""Is work waiting for this worker? Requests queued at the broker, or delivered and unread.

Micro-batches are sized for latency while the worker keeps up. When requests wait anyway,
their latency is the wait's, not the call's, and full batches (fewer calls, less CPU and
fewer prompt tokens per message) drain the wait fastest. Work waits in two places: in
the queue (the broker counts its ready messages; asked once a second on a connection of
this thread's own, a passive declare, so the event loop never waits) and, when the
worker's event loop is the bottleneck, already delivered but not yet read (the bytes
waiting in the consumer connection's socket, read without consuming them).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import socket
import termios
import threading

import structlog
from kombu import Connection

log = structlog.get_logger("worker.backlog")


_UNREAD_BACKLOG = 64 * 1024  # bytes delivered and unread: dozens of requests


class QueueDepth:
    """Polls ``queue``'s ready count every ``interval`` s in a daemon thread."""

    def __init__(
        self, broker_url: str, queue: str, interval: float = 1.0, ssl: dict | bool = False
    ) -> None:
        self.broker_url = broker_url
        self.ssl = ssl  # kombu's option (``worker._tls.broker_ssl``), copied per connection
        self.queue = queue
        self.interval = interval
        # the last two looks, (ready messages in the queue, unread bytes in the consumer's
        # socket): a backlog counts once both show it, so a moment's hiccup (a pause of
        # the event loop, a burst) does not turn a second of calls into full batches
        self.samples: list[tuple[int, int]] = [(0, 0), (0, 0)]
        self.socket: socket.socket | None = None  # the consumer connection's, once known
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moderation-backlog", daemon=True)

    def backlogged(self, batch: int) -> bool:
        """More than a full batch waits in the queue, or the event loop is behind, at
        two looks in a row (``interval`` apart)."""
        return all(ready > batch or unread > _UNREAD_BACKLOG for ready, unread in self.samples)

    @property
    def ready(self) -> int:
        """Messages waiting in the queue at the last look."""
        return self.samples[-1][0]

    def record(self, ready: int, unread: int) -> None:
        self.samples = [self.samples[-1], (ready, unread)]

    def start(self) -> QueueDepth:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ssl = dict(self.ssl) if isinstance(self.ssl, dict) else self.ssl
                with Connection(
                    self.broker_url, heartbeat=0, connect_timeout=5, ssl=ssl
                ) as connection:
                    channel = connection.channel()
                    while not self._stop.is_set():
                        _, ready, _ = channel.queue_declare(self.queue, passive=True)
                        self.record(ready, _unread(self.socket))
                        self._stop.wait(self.interval)
            except Exception as exc:  # broker away, queue not declared yet: no backlog known
                self.record(0, 0)
                log.debug("backlog_poll_failed", error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    self._stop.wait(self.interval * 5)


def _unread(sock: socket.socket | None) -> int:
    """Bytes received on ``sock`` and not yet read (FIONREAD); 0 when unknown."""
    if sock is None:
        return 0
    buffer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer, True)
    except (OSError, ValueError):
        return 0
    return int(buffer[0])
