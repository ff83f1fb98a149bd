"""The broker side of the AMQP toolkit: addresses, connections, ``rabbitmqctl``, vhosts."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import amqp


@dataclass(frozen=True)
class BrokerAddress:
    """An ``amqp://`` URL taken apart for py-amqp, which the toolkit uses directly: kombu's
    own confirmed publishing waits for every confirm (~1.6k/s), too slow for a load test.
    Several URLs in kombu's failover syntax (``amqp://a;amqp://b``) are tried in turn,
    starting after the one that last failed."""

    hosts: tuple[str, ...]
    userid: str
    password: str
    virtual_host: str
    _next: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        urls = [u.strip() for u in url.split(";") if u.strip()]
        first = urlsplit(urls[0])
        return cls(
            hosts=tuple(f"{p.hostname}:{p.port or 5672}" for p in map(urlsplit, urls)),
            userid=unquote(first.username or "guest"),
            password=unquote(first.password or "guest"),
            virtual_host=unquote(first.path[1:]) if len(first.path) > 1 else "/",
        )

    @property
    def host(self) -> str:
        return self.hosts[self._next[0] % len(self.hosts)]

    def connect(self, attempts: int = 10, connect_timeout: float = 10.0) -> amqp.Connection:
        """Connect, retrying (``attempts`` rounds over the hosts, backing off between
        rounds): a shared broker may be briefly unavailable, a cluster's node gone. No
        heartbeats: each connection's owner reads it often."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        for attempt in range(attempts):
            for _ in self.hosts:
                connection = amqp.Connection(
                    host=self.host,
                    userid=self.userid,
                    password=self.password,
                    virtual_host=self.virtual_host,
                    heartbeat=0,
                    connect_timeout=connect_timeout,
                )
                try:
                    connection.connect()
                    return connection
                except (OSError, amqp.exceptions.AMQPError) as exc:
                    failure = exc
                    self._next[0] += 1  # the next host, now and for the next connect
            if attempt < attempts - 1:
                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise failure


def drain(connection: amqp.Connection, timeout: float) -> None:
    """Run the callbacks of whatever frames arrive within ``timeout`` (none is fine)."""
    with contextlib.suppress(TimeoutError):  # socket.timeout is TimeoutError
        connection.drain_events(timeout=timeout)


def close(connection: amqp.Connection) -> None:
    """Close politely if the broker is still there, else just drop the socket."""
    try:
        connection.close()
    except Exception:
        with contextlib.suppress(Exception):
            connection.collect()


def rabbitmqctl(
    *args: str, check: bool = True, timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    """``rabbitmqctl -q ARGS`` on this machine's broker, output captured."""
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=check, capture_output=True, timeout=timeout
    )


@contextlib.contextmanager
def temporary_vhost(
    prefix: str = "moderation-test", *, delete_attempts: int = 1, timeout: float = 60.0
) -> Iterator[str]:
    """A vhost of our own (guest may do anything in it), deleted afterwards: tests and
    benchmarks share one broker with other people's, and never see their queues.

    ``delete_attempts`` > 1 retries the deletion 3 s apart (a broker that someone else is
    restarting); if it still fails, says on stderr how to delete it by hand.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name, timeout=timeout)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", timeout=timeout)
        yield name
    finally:
        for attempt in range(delete_attempts):
            if rabbitmqctl("delete_vhost", name, check=False, timeout=timeout).returncode == 0:
                break
            if attempt < delete_attempts - 1:
                time.sleep(3)
        else:
            print(
                f"could not delete vhost {name}: delete it with `rabbitmqctl delete_vhost {name}`",
                file=sys.stderr,
            )
