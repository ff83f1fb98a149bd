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
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if settings.tls_ca_file is not None:
        options["ca_certs"] = str(settings.tls_ca_file)
    if settings.tls_cert_file is not None:
        options["certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            options["keyfile"] = str(settings.tls_key_file)
    return options


def redis_ssl(settings: Settings, url: str | None) -> dict[str, Any]:
    """redis-py's keyword arguments for ``url`` (nothing for ``redis://``)."""
    if not url or not url.lower().startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.tls_ca_file)
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            options["ssl_keyfile"] = str(settings.tls_key_file)
    return options
