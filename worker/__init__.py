"""Real-time content moderation worker: RabbitMQ in, rules + LLM, verdicts out.

``celery -A worker worker`` finds the Celery app as ``worker.app``; it is imported
lazily so that the pipeline, the client and the CLI do not pay for Celery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import app

        return app
    raise AttributeError(name)
