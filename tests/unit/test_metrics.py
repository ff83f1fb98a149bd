"""The /metrics endpoint listens where ``MODERATION_METRICS_ADDRESS`` says."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from worker import metrics


def test_metrics_listen_on_the_configured_address_only():
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))  # all of 127/8 is loopback on Linux
        port = probe.getsockname()[1]
    metrics.serve(port, "127.0.0.2")
    body = urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5).read()
    assert b"moderation_" in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
