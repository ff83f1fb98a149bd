"""Every log record, ours or a library's, is one JSON line (``worker._logging``)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from worker._logging import HANDLER_NAME, QUIET_LIBRARIES, configure

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"event", "level", "timestamp", "logger"}

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Configure into a StringIO; afterwards put logging and structlog back as they were.

    Other tests in this process must not inherit our root handler, level or structlog
    configuration.
    """
    root = logging.getLogger()
    saved_level = root.level
    saved_quiet = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    saved_structlog = structlog.get_config()
    buffer = io.StringIO()
    configure("INFO", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.contextvars.clear_contextvars()
        for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)
        for name, level in saved_quiet.items():
            logging.getLogger(name).setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()
        structlog.configure(**saved_structlog)


@pytest.fixture
def lines(stream: io.StringIO) -> Lines:
    """The records written so far, each line parsed (fails on any non-JSON line)."""

    def parse() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    return parse


def _only(lines: Lines) -> dict[str, Any]:
    records = lines()
    assert len(records) == 1, records
    assert records[0].keys() >= KEYS, records[0]
    return records[0]


def test_structlog_event_is_one_json_line(lines: Lines) -> None:
    structlog.get_logger("worker.test").info("batch done", size=3)
    record = _only(lines)
    assert record["event"] == "batch done"
    assert record["size"] == 3
    assert record["level"] == "info"
    assert record["logger"] == "worker.test"
    assert record["timestamp"].endswith("Z")


def test_celery_stdlib_record_is_json(lines: Lines) -> None:
    logging.getLogger("celery.worker").warning("x %s", 1)
    record = _only(lines)
    assert (record["event"], record["level"], record["logger"]) == (
        "x 1",
        "warning",
        "celery.worker",
    )


def test_kombu_warning_is_json(lines: Lines) -> None:
    logging.getLogger("kombu").info("quieted")  # kombu is held at WARNING
    logging.getLogger("kombu").warning("connection lost")
    record = _only(lines)
    assert (record["event"], record["logger"]) == ("connection lost", "kombu")


@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_exception_is_one_json_line(lines: Lines, stream: io.StringIO, source: str) -> None:
    log: Any = (
        structlog.get_logger("worker.test")
        if source == "structlog"
        else logging.getLogger("worker.test")
    )
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    assert stream.getvalue().count("\n") == 1
    record = _only(lines)
    assert record["level"] == "error"
    assert "Traceback" in record["exception"]
    assert "ValueError: bad" in record["exception"]


def test_contextvars_reach_our_and_foreign_records(lines: Lines) -> None:
    structlog.contextvars.bind_contextvars(message_id="m1")
    structlog.get_logger("worker.test").info("ours")
    logging.getLogger("celery.app.trace").info("theirs")
    structlog.contextvars.clear_contextvars()
    logging.getLogger("celery.app.trace").info("after")
    ours, theirs, after = lines()
    assert ours["message_id"] == theirs["message_id"] == "m1"
    assert "message_id" not in after


def test_configure_twice_does_not_duplicate(stream: io.StringIO, lines: Lines) -> None:
    configure("INFO", stream=stream)
    structlog.get_logger("worker.test").info("once")
    logging.getLogger("celery").info("once")
    assert [r["event"] for r in lines()] == ["once", "once"]
    assert [h.get_name() for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1


def test_debug_is_filtered_at_info(lines: Lines) -> None:
    structlog.get_logger("worker.test").debug("hidden")
    logging.getLogger("celery.worker").debug("hidden")
    structlog.get_logger("worker.test").info("shown")
    assert [r["event"] for r in lines()] == ["shown"]


def test_celery_app_process_stderr_is_all_json() -> None:
    """In a real process (worker.celery_app imported, Celery's signal sent), stderr is JSON."""
    code = (
        "import logging, structlog\n"
        "from celery import signals\n"
        "import worker.celery_app\n"
        "signals.setup_logging.send(sender=None, loglevel=20, logfile=None,"
        " format='', colorize=False)\n"
        "logging.getLogger('celery.app.trace').info('task %s done', 'x')\n"
        "structlog.get_logger('worker.test').info('ours')\n"
        "logging.getLogger('kombu').warning('theirs')\n"
    )
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": "/work/shared/tiktoken",
        "MODERATION_LOG_LEVEL": "INFO",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert [r["event"] for r in records] == ["task x done", "ours", "theirs"]
    assert all(r.keys() >= KEYS for r in records)


def test_records_while_a_message_is_prepared_name_it(lines: Lines, monkeypatch) -> None:
    from worker.pipeline import build_pipeline
    from worker.settings import Settings
    from worker.validate import Envelope

    pipeline = build_pipeline(Settings(openai_base_url=None, openai_api_key=None))

    def noisy(*args: Any) -> Any:
        logging.getLogger("kombu").warning("something while preparing")
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "_prepare_valid", noisy)
    body = json.dumps({"id": "m-7", "tenant": "acme", "text": "hello"}).encode()
    dead = pipeline.prepare(Envelope(body))
    assert getattr(dead, "reason", None) == "internal_error"
    records = lines()
    assert [r.get("message_id") for r in records] == ["m-7", "m-7"]  # kombu's and ours
    assert all(r.get("tenant") == "acme" for r in records)
    structlog.get_logger("worker.test").info("after")
    assert "message_id" not in lines()[-1]  # unbound once the message is handled
