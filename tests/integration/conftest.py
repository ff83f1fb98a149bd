"""Fixtures of the broker and worker-process tests: a verdict collector that survives
broker restarts, and the simulated LLM ready for a worker's many concurrent calls."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from worker.client import ModerationClient
from worker.settings import Settings
from worker.testing.amqp import VerdictCollector
from worker.testing.fake_llm import FakeLLM

from ._faults import Collector


@pytest.fixture
def collector(broker_url: str, client: ModerationClient) -> Iterator[Collector]:
    """Bound before anything is published (``client`` purged the queues first)."""
    c: Collector = VerdictCollector(
        broker_url,
        Settings(broker_url=broker_url),
        queue_name=f"test.reliability.verdicts.{uuid.uuid4().hex[:8]}",
    ).start()
    yield c
    c.stop()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> Iterator[FakeLLM]:
    """The simulated LLM, able to take a worker's 48 concurrent calls.

    ``ThreadingHTTPServer`` listens with a backlog of 5: with dozens of connections
    opening at once the kernel drops the handshakes it has no room for and the client
    waits out its whole timeout, which would test the fake, not the worker. A killed
    worker also leaves broken connections behind, whose tracebacks are only noise here.
    """
    server = fake_llm._server
    server.socket.listen(512)
    original = server.handle_error

    def quiet(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # broken pipes, resets
            original(request, client_address)

    server.handle_error = quiet  # type: ignore[method-assign]
    yield fake_llm
    server.handle_error = original  # type: ignore[method-assign]
    server.socket.listen(server.request_queue_size)
