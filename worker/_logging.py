"""Structured JSON logs (structlog). Message text is user data: it is never logged here."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", stream: object = None) -> None:
    logging.basicConfig(
        format="%(message)s", stream=stream or sys.stderr, level=level.upper(), force=False
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


# Libraries that log request URLs at INFO; keep them to warnings.
for _name in ("httpx", "httpx2", "openai", "httpcore", "amqp", "kombu"):
    logging.getLogger(_name).setLevel(logging.WARNING)
