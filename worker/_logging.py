"""Structured JSON logs (structlog). Message text is user data: it is never logged here.

Every record leaves the process as one JSON line, whoever emitted it: our structlog
events go through stdlib ``logging`` (``structlog.stdlib.LoggerFactory``) and end at the
same root handler as Celery's, kombu's, amqp's, openai's and httpx's own ``logging``
records. That handler's ``structlog.stdlib.ProcessorFormatter`` renders both kinds, so a
log shipper never sees a plain-text line in the middle of the JSON stream.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog
from structlog.typing import Processor

#: The name of the one root handler ``configure`` owns, so a second call replaces it
#: instead of adding another (which would print every record twice).
HANDLER_NAME = "worker.json"

#: Libraries that log request URLs (or per-frame chatter) at INFO; keep them to warnings.
QUIET_LIBRARIES = ("httpx", "httpx2", "openai", "httpcore", "amqp", "kombu")


def _shared_processors() -> list[Processor]:
    """Steps both kinds of record need, so their keys are the same.

    They run on the emitting thread for our events, and in the handler (which is
    synchronous, so still on the emitting thread) for foreign records: that is what lets
    ``merge_contextvars`` add the request context bound by whoever is logging.
    ``format_exc_info`` runs here, not in the formatter, so our ``log.exception`` captures
    the traceback at the call site.
    """
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def _json_handler(stream: IO[str]) -> logging.Handler:
    """The root handler: JSON for every record (newlines in tracebacks stay escaped)."""
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    return handler


def configure(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send all logging, ours and the libraries', to ``stream`` (stderr) as JSON lines.

    Idempotent: the handler a previous call installed is replaced, handlers others
    installed (pytest's capture, say) are left alone. Our loggers filter by level in the
    bound logger class itself, so a disabled ``log.debug`` costs a no-op method call.
    """
    level = level.upper()
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(_json_handler(stream or sys.stderr))
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # warnings.warn (e.g. Celery's SecurityWarning) as py.warnings records, in JSON too.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


# Quiet even before configure() runs (imports that log at INFO on the way in).
for _name in QUIET_LIBRARIES:
    logging.getLogger(_name).setLevel(logging.WARNING)
