"""One chat-completions request for one batch: built, sent, and read as it arrives.

The openai client does the HTTP (auth, errors mapped to ``openai`` exceptions, time-outs);
the body is read here with orjson rather than the client's typed models, which cost more
CPU than the exchange itself. Streamed or not, the content goes through a
``ReplyReader``, so each item's answer is handed on (``on_entries``) the moment its entry
is complete, and a reply that stops early (time-out, cut-off, disconnect) still yields
the entries it got.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import orjson

try:  # the HTTP library the openai client is built on (its 3.x releases: httpx2)
    import httpx2 as _http
except ImportError:  # pragma: no cover - older openai releases
    import httpx as _http  # type: ignore[no-redef]

from worker._prompt import SYSTEM_PROMPT, count_tokens, response_format, user_message
from worker._reply import Answer, ReplyError, ReplyReader

# the answers just completed, and the call's usage when it is already known (not streamed)
OnEntries = Callable[[list[Answer], dict[str, Any] | None], None]


@dataclass(slots=True)
class CallOutcome:
    reader: ReplyReader
    duration_s: float
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    ttft_s: float | None = None
    refused: bool = False
    timed_out: bool = False  # the stream did not finish within the call's time-out
    content: str = ""
    rate_headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"

    def reply_tokens(self) -> int:
        return count_tokens(self.content) if self.content else 0


@dataclass(frozen=True, slots=True)
class CallLimits:
    max_tokens: int
    timeout_s: float  # the whole call
    first_token_s: float  # streaming: the first byte, and any gap between chunks


def _body(
    model: str, items: list[tuple[str, str | None]], limits: CallLimits, stream: bool
) -> bytes:
    request: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_message(items)},
        ],
        "response_format": response_format(len(items)),
        "temperature": 0,
        "max_completion_tokens": limits.max_tokens,
    }
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return orjson.dumps(request)


def call(
    client: openai.OpenAI,
    model: str,
    items: list[tuple[str, str | None]],
    limits: CallLimits,
    stream: bool,
    on_entries: OnEntries,
) -> CallOutcome:
    """One HTTP request; raises ``openai`` errors for HTTP failures, ``ReplyError`` for a
    body that is not a chat completion."""
    reader = ReplyReader(len(items))
    started = time.monotonic()
    if stream:
        return _streamed(
            client, _body(model, items, limits, stream), limits, reader, on_entries, started
        )
    response = _post(
        client,
        _body(model, items, limits, stream),
        stream=False,
        timeout=openai.Timeout(limits.timeout_s, connect=min(5.0, limits.timeout_s)),
    )
    body = _json_object(response.content)
    outcome = CallOutcome(
        reader, time.monotonic() - started, usage=_usage(body), rate_headers=rate_headers(response)
    )
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError("reply has no choices")
    choice = choices[0]
    outcome.finish_reason = choice.get("finish_reason")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ReplyError("reply has no message")
    outcome.refused = bool(message.get("refusal"))
    content = message.get("content")
    if isinstance(content, str):
        outcome.content = content
        entries = reader.feed(content)
        if entries:
            on_entries(entries, outcome.usage)
    reader.finish()
    return outcome


def rate_headers(response: Any) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of a response (``worker._rate_budget``)."""
    headers = getattr(response, "headers", None) or {}
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}


def _post(client: openai.OpenAI, body: bytes, stream: bool, timeout: openai.Timeout) -> Any:
    """POST through the client's documented raw route (``client.post`` with
    ``cast_to=httpx.Response``): its auth, retries policy, error mapping and time-outs,
    without the per-call walk of the typed request parameters (~4 ms a call here)."""
    return client.post(
        "/chat/completions",
        cast_to=_http.Response,
        content=body,
        options={"headers": {"Content-Type": "application/json"}, "timeout": timeout},
        stream=stream,
    )


def _streamed(
    client: openai.OpenAI,
    body: bytes,
    limits: CallLimits,
    reader: ReplyReader,
    on_entries: OnEntries,
    started: float,
) -> CallOutcome:
    outcome = CallOutcome(reader, 0.0)
    deadline = started + limits.timeout_s
    pieces: list[str] = []
    timeout = openai.Timeout(
        limits.first_token_s, connect=min(5.0, limits.first_token_s), pool=limits.timeout_s
    )
    response = _post(client, body, stream=True, timeout=timeout)
    outcome.rate_headers = rate_headers(response)
    try:
        for data in _events(response.iter_bytes()):
            if data == b"[DONE]":
                break
            _read_chunk(_json_object(data), outcome, pieces, started, on_entries)
            if time.monotonic() > deadline:
                outcome.timed_out = True
                break
    except (_http.TimeoutException, _http.TransportError) as exc:
        if not pieces:  # nothing arrived: the call failed as a whole
            request_info = getattr(exc, "request", None)
            if isinstance(exc, _http.TimeoutException):
                raise openai.APITimeoutError(request=request_info) from exc  # type: ignore[arg-type]
            raise openai.APIConnectionError(request=request_info) from exc  # type: ignore[arg-type]
        outcome.timed_out = True  # broke off mid-reply: keep what came
    finally:
        response.close()
    outcome.content = "".join(pieces)
    outcome.duration_s = time.monotonic() - started
    if not outcome.timed_out and outcome.finish_reason is not None:
        reader.finish()
    return outcome


def _events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The data of each server-sent event, split on bytes (no text decoding per chunk)."""
    buffer = b""
    data: list[bytes] = []
    for chunk in chunks:
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end].rstrip(b"\r"), buffer[end + 1 :]
            if not line:  # a blank line ends the event
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
    if data:
        yield b"\n".join(data)


def _read_chunk(
    chunk: dict[str, Any],
    outcome: CallOutcome,
    pieces: list[str],
    started: float,
    on_entries: OnEntries,
) -> None:
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ReplyError(f"error in stream: {str(message)[:200]}")
    outcome.usage = _usage(chunk) or outcome.usage
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if text and isinstance(text, str):
                if outcome.ttft_s is None:
                    outcome.ttft_s = time.monotonic() - started
                pieces.append(text)
                entries = outcome.reader.feed(text)
                if entries:
                    on_entries(entries, None)
            if delta.get("refusal"):
                outcome.refused = True
        outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason


def _json_object(raw: bytes | str) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ReplyError("response body is not JSON") from None
    if not isinstance(body, dict):
        raise ReplyError("response body is not a JSON object")
    return body


def _usage(body: dict[str, Any]) -> dict[str, Any] | None:
    usage = body.get("usage")
    return usage if isinstance(usage, dict) else None


def endpoint_message(exc: openai.APIStatusError) -> str:
    """The endpoint's own error message, for the logs.

    Some servers quote the request in validation errors (``'input': ...``): the message
    is cut where a quote of the input would start, so no user text reaches the logs.
    """
    body = exc.body
    text = exc.message or type(exc).__name__
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            parts = [str(error.get(k)) for k in ("type", "code", "message") if error.get(k)]
            text = ": ".join(parts) or text
        elif isinstance(error, str):
            text = error
    cut = _QUOTED_INPUT.search(text)
    return (text[: cut.start()] + "[input not shown]" if cut else text)[:300]


_QUOTED_INPUT = re.compile(r"""['"]?(input|messages|content)['"]?\s*[:=]\s*[\[{'"]""")
_CONTEXT_SIZE = re.compile(r"maximum context length is (\d+)")


def context_size(exc: openai.APIStatusError) -> int | None:
    """The model's context in tokens, when the 400 says it (llama.cpp, OpenAI)."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("n_ctx"), int):
        return int(error["n_ctx"])
    found = _CONTEXT_SIZE.search(exc.message or "")
    return int(found.group(1)) if found else None


def is_context_error(exc: openai.APIStatusError) -> bool:
    """A 400 saying the prompt does not fit the model's context (OpenAI's and llama.cpp's)."""
    if exc.status_code != 400:
        return False
    text = endpoint_message(exc).lower()
    return any(
        k in text
        for k in (
            "context_length_exceeded",
            "exceed_context_size",
            "context size",
            "context length",
            "maximum context",
        )
    )
