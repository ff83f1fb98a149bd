"""TLS to the broker (``amqps://``) and Redis (``rediss://``): certificates verified,
against ``MODERATION_TLS_CA_FILE`` when set (a private CA), else the system's store;
``MODERATION_TLS_CERT_FILE``/``_KEY_FILE`` for mutual TLS. Plain URLs get no TLS.

Each call returns a fresh dict: kombu writes the host it connects to into the one it
is given (``server_hostname``), so a shared dict would pin the first host's name.
With several broker URLs, kombu checks every node's certificate against the name of
the first node it reached: give a cluster's certificate every node's name.
"""

from __future__ import annotations

import ssl
from typing import Any

from worker.settings import Settings


def broker_ssl(settings: Settings, url: str | None = None) -> dict[str, Any] | bool:
    """kombu's ``ssl=`` for ``url`` (default: the settings' broker URLs)."""
    urls = (url or settings.broker_url).split(";")
    if not any(u.strip().lower().startswith("amqps://") for u in urls):
        return False
    files = _files(settings, ca="ca_certs", cert="certfile", key="keyfile")
    return {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None, **files}


def redis_ssl(settings: Settings, url: str | None) -> dict[str, Any]:
    """redis-py's keyword arguments for ``url`` (nothing for ``redis://``)."""
    if not url or not url.lower().startswith("rediss://"):
        return {}
    files = _files(settings, ca="ssl_ca_certs", cert="ssl_certfile", key="ssl_keyfile")
    return {"ssl_cert_reqs": "required", **files}


def _files(settings: Settings, ca: str, cert: str, key: str) -> dict[str, str]:
    """The CA, client certificate and key files that are set, under the client's names."""
    named = {ca: settings.tls_ca_file, cert: settings.tls_cert_file}
    if settings.tls_cert_file is not None:
        named[key] = settings.tls_key_file
    return {name: str(path) for name, path in named.items() if path is not None}
