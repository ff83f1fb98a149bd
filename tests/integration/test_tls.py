"""TLS to RabbitMQ (``amqps://``) and Redis (``rediss://``), with a CA the test makes.

A RabbitMQ node of our own with a TLS listener (``RabbitCluster(size=1)``), a
``redis-server`` with only a TLS port, both with a certificate signed by a throw-away
CA; the worker trusts that CA through ``MODERATION_TLS_CA_FILE`` and nothing else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from worker.client import ModerationClient
from worker.settings import Settings
from worker.testing.amqp import RabbitCluster, cluster_unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command"),
    pytest.mark.skipif(cluster_unavailable() is not None, reason=str(cluster_unavailable())),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server"),
]

AMQPS_PORT = 5695


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=moderation test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem", cwd=folder,
    )  # fmt: skip
    for name in ("ca.key", "server.key"):
        (folder / name).chmod(0o600)
    return {name: folder / f"{name}.pem" for name in ("ca", "server")} | {
        "key": folder / "server.key"
    }


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "pki"
    folder.mkdir()
    return make_ca(folder)


@pytest.fixture
def tls_broker(certs: dict[str, Path], tmp_path: Path):
    config = (
        f"listeners.ssl.default = 127.0.0.1:{AMQPS_PORT}\n"
        f"ssl_options.cacertfile = {certs['ca']}\n"
        f"ssl_options.certfile = {certs['server']}\n"
        f"ssl_options.keyfile = {certs['key']}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    with RabbitCluster(tmp_path / "rabbit", size=1, base_port=5693, extra_config=config):
        yield f"amqps://guest:guest@127.0.0.1:{AMQPS_PORT}//"


@pytest.fixture
def tls_redis(certs: dict[str, Path], tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs["server"]), "--tls-key-file", str(certs["key"]),
         "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, ssl_ca_certs=str(certs["ca"]), socket_timeout=1)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url, client
    finally:
        proc.kill()
        proc.wait(10)


def test_the_worker_talks_tls_to_broker_and_redis_and_verifies_their_certificates(
    start_worker, tls_broker: str, tls_redis, certs: dict[str, Path], tmp_path: Path
):
    redis_url, cache = tls_redis
    worker = start_worker(
        MODERATION_BROKER_URL=tls_broker,
        MODERATION_REDIS_URL=redis_url,
        MODERATION_TLS_CA_FILE=str(certs["ca"]),
    )
    settings = Settings(broker_url=tls_broker, tls_ca_file=certs["ca"])
    with ModerationClient(tls_broker, settings) as client, client.subscribe("#") as verdicts:
        client.publish({"id": "t1", "text": "kys"})
        client.publish({"id": "t2", "text": "an ordinary message for the model"})
        got = {v.id: v for v in verdicts.drain(2, timeout=60)}
    assert got["t1"].action == "block" and got["t1"].source == "rules"
    assert got["t2"].source == "llm"
    deadline = time.monotonic() + 10  # written after the verdict, off its path
    while cache.dbsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cache.dbsize() >= 1, "no scores in Redis over TLS:\n" + worker.output()[-2000:]

    # verification is on: without the CA, the same broker is refused
    untrusted = Settings(broker_url=tls_broker)
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        ModerationClient(tls_broker, untrusted)
