"""Timing and limits of the simulated LLM: what refuses a request before it is generated
(faults, context size, rate limits), slots, time to first token, the pacing of the tokens
on the wire. Private to ``worker.testing.fake_llm``.
"""

from __future__ import annotations

import bisect
import math
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from worker.testing import _fake_reply as fr
from worker.testing._fake_http import Responder

if TYPE_CHECKING:
    from worker.testing.fake_llm import FakeLLMState


def draw_ttft_ms(rng: random.Random, median_ms: float, sigma: float) -> float:
    """A time to first token: lognormal with this median (its mean is a little higher)."""
    if median_ms <= 0 or sigma <= 0:
        return max(0.0, median_ms)
    return rng.lognormvariate(math.log(median_ms), sigma)


def fixed_delay_s(state: FakeLLMState) -> float:
    """``latency_ms`` +- uniform ``jitter_ms``, in seconds."""
    jitter = state.rng.uniform(-state.jitter_ms, state.jitter_ms) if state.jitter_ms else 0.0
    return max(0.0, state.latency_ms + jitter) / 1000


def schedule(state: FakeLLMState, prompt: int) -> tuple[float, float]:
    """From now: (when the first token is written, monotonic; seconds per next token)."""
    now = time.monotonic()
    if state.timing == "instant":
        return now, 0.0
    if state.timing == "fixed":
        return now + fixed_delay_s(state), 0.0
    ttft = draw_ttft_ms(state.rng, state.ttft_ms, state.ttft_sigma)
    prefill = prompt / 1000 * state.prefill_ms_per_1k
    return now + (ttft + prefill) / 1000, state.token_ms / 1000


def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def paced(due: Sequence[float]) -> Iterator[tuple[int, int]]:
    """Sleep until each item of ``due`` (sorted monotonic times) is due; yield index ranges:
    one item when the caller keeps up, every item already due when it falls behind (or
    when all are due at once), so a late writer catches up in one write, not many."""
    start, end = 0, len(due)
    while start < end:
        sleep_until(due[start])
        stop = bisect.bisect_right(due, time.monotonic(), start + 1, end)
        yield start, stop
        start = stop


def stream(
    conn: Responder, frames: fr.Frames, parts: Sequence[tuple[str, int]],
    when: tuple[float, float, float], head: bytes, tail: bytes, cut: bool,
) -> bool:  # fmt: skip
    """Each part (text, tokens written so far) as an event when its last token is written,
    token i at ``first + i * step``, then ``tail`` at ``done`` (``when``); ``head`` goes
    with the first write. Behind a real schedule the parts that are due go as one event;
    all due at once (instant, fixed), as one event each in one write. ``cut``: hang up
    after half of them. True if all was sent."""
    first, step, done = when
    events = [fr.chunked(frames.delta(text)) for text, _ in parts]  # before any waiting
    due = [first + (written - 1) * step for _, written in parts]
    for start, end in paced(due[: len(due) // 2] if cut else due):
        if end - start == 1:
            data = events[start]
        elif step > 0:
            data = fr.chunked(frames.delta("".join(text for text, _ in parts[start:end])))
        else:
            data = b"".join(events[start:end])
        if not conn.write(head + data):
            return False
        head = b""
    if cut:
        conn.write(head)
        conn.hang_up()
        return False
    sleep_until(done)
    return conn.write(head + tail)


def admit(
    conn: Responder, state: FakeLLMState, request: dict[str, Any], fault: str | None
) -> tuple[int, dict[str, str]] | None:
    """Answer the faults and limits that refuse ``request`` before it is generated: None
    when it was so answered, else (its prompt tokens, the x-ratelimit-* headers)."""
    if fault in ("429", "500", "timeout", "stall", "context"):
        if state.timing == "fixed":  # as every answer, whatever it is
            sleep_until(time.monotonic() + fixed_delay_s(state))
        elif state.timing == "real" and fault == "500":  # failed while generating
            sleep_until(schedule(state, 0)[0])
    if fault in fr.FAULT_ERRORS:
        if fault == "timeout":
            time.sleep(state.timeout_s)
        conn.send(*fr.FAULT_ERRORS[fault])
        return None
    if fault == "stall":
        wait_for_hangup(conn.connection, state.stall_s)
        conn.hang_up()
        return None
    prompt = fr.prompt_tokens(request.get("messages") or [])
    cap = fr.completion_cap(request)
    style, n_ctx = state.error_style, state.context_tokens
    if fault == "context" or fr.too_large(style, n_ctx, prompt, cap):
        conn.send(400, fr.context_error(style, n_ctx, prompt, cap))
        return None
    headers: dict[str, str] = {}
    if state.rpm > 0 or state.tpm > 0:  # OpenAI counts the completion asked for
        model = str(request.get("model") or "fake")
        headers, limited = state.limiter.take(state.rpm, state.tpm, prompt + (cap or 0), model)
        if limited is not None:
            with state.lock:
                state.by_fault["rate_limit"] = state.by_fault.get("rate_limit", 0) + 1
            conn.send(429, limited, headers)
            return None
    return prompt, headers


def generate(
    conn: Responder, state: FakeLLMState, request: dict[str, Any], reply: fr.Reply,
    prompt: int, headers: dict[str, str], fault: str | None,
) -> bool:  # fmt: skip
    """Write ``reply`` on ``conn`` as the model would: once a slot is free, after the time
    to first token, token by token. True if it was all sent."""
    model = str(request.get("model") or "fake")
    ident, created = f"chatcmpl-fake-{state.requests}", int(time.time())
    state.queue.acquire()  # waiting for a slot counts toward the time to first token
    try:
        with state.lock:
            state.active += 1
            state.max_concurrent = max(state.max_concurrent, state.active)
        first, step = schedule(state, prompt)
        end = first + reply.completion_tokens * step  # the stop, a step after the last token
        if request.get("stream"):
            frames = fr.Frames(ident, model, created, reply.refusal)
            wanted = (request.get("stream_options") or {}).get("include_usage")
            usage = fr.usage(reply, prompt) if wanted and fault != "no_usage" else None
            tail = fr.chunked(frames.end(reply.finish, usage)) + fr.CHUNKED_END
            head = conn.head(200, "text/event-stream", headers, None)
            when = (first, step, end)
            return stream(conn, frames, fr.pieces(reply), when, head, tail, fault == "disconnect")
        body = fr.completion_body(reply, ident, model, created, prompt, fault != "no_usage")
        sleep_until(end)
        if fault == "disconnect":
            conn.hang_up()
            return False
        return conn.send(200, body, headers)
    finally:
        with state.lock:
            state.active -= 1
        state.queue.release()


def wait_for_hangup(sock: socket.socket, seconds: float) -> None:
    """Return after ``seconds``, or sooner when the peer closes its end of ``sock``."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable or not sock.recv(1, socket.MSG_PEEK):  # b"": the peer left
                return
        except OSError:
            return
        sleep_until(deadline)  # it sent more (pipelined): nothing to watch for until then


def go_duration(seconds: float) -> str:
    """A duration as Go prints it, as in OpenAI's x-ratelimit-reset-* headers: "120ms",
    "1.5s", "6m0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(seconds * 1000, 0.001):.3f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(round(seconds * 1000), 3_600_000)
    minutes, millis = divmod(rest, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


class TokenBucket:
    """``limit`` a minute, refilled continuously; holds at most ``limit``."""

    __slots__ = ("level", "limit", "stamp")

    def __init__(self) -> None:
        self.limit = self.level = self.stamp = 0.0

    def refill(self, limit: float, now: float) -> None:
        if limit != self.limit:  # a new budget starts full
            self.limit, self.level = limit, limit
        else:
            self.level = min(limit, self.level + (now - self.stamp) * limit / 60)
        self.stamp = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, level - self.level) * 60 / self.limit


class RateLimiter:
    """OpenAI's requests-per-minute and tokens-per-minute budgets (0: no limit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets = {"requests": TokenBucket(), "tokens": TokenBucket()}

    def take(
        self, rpm: float, tpm: float, tokens: int, model: str
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The x-ratelimit-* headers, and the 429 body when over budget (then nothing is
        taken). A request costs 1 request and ``tokens`` tokens."""
        wanted = {"requests": (rpm, 1), "tokens": (tpm, tokens)}
        headers: dict[str, str] = {}
        with self._lock:
            now = time.monotonic()
            active = {k: self._buckets[k] for k, (limit, _) in wanted.items() if limit > 0}
            for kind, bucket in active.items():
                bucket.refill(wanted[kind][0], now)
            short = [k for k, bucket in active.items() if bucket.level < wanted[k][1]]
            for kind, bucket in active.items():
                bucket.level -= 0 if short else wanted[kind][1]
                headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.limit))
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = go_duration(
                    bucket.seconds_until(bucket.limit)
                )
            if not short:
                return headers, None
            kind, bucket, asked = short[0], active[short[0]], wanted[short[0]][1]
            where = (
                f"for {model} in organization org-fake on {kind} per min "
                f"({'RPM' if kind == 'requests' else 'TPM'}): Limit {int(bucket.limit)}"
            )
            if asked > bucket.limit:  # can never pass: no retry-after
                message = (
                    f"Request too large {where}, Requested {asked}. The input or output "
                    "tokens must be reduced in order to run successfully."
                )
            else:
                wait = max(0.001, *(active[k].seconds_until(wanted[k][1]) for k in short))
                used = int(bucket.limit) - max(0, int(bucket.level))
                message = (
                    f"Rate limit reached {where}, Used {used}, Requested {asked}. "
                    f"Please try again in {go_duration(wait)}."
                )
                headers["retry-after"] = f"{wait:.3f}".rstrip("0").rstrip(".")
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        return headers, fr.error(message, kind, None, "rate_limit_exceeded")


class Slots:
    """At most ``limit`` holders at once (0: no limit); the others wait in FIFO order."""

    def __init__(self, limit: int = 0) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._busy = 0
        self._waiting: deque[threading.Event] = deque()

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self._limit = limit
            self._wake()

    def acquire(self) -> None:
        with self._lock:
            if self._limit <= 0 or (self._busy < self._limit and not self._waiting):
                self._busy += 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the releaser counted us in

    def release(self) -> None:
        with self._lock:
            self._busy -= 1
            self._wake()

    def _wake(self) -> None:
        while self._waiting and (self._limit <= 0 or self._busy < self._limit):
            self._busy += 1
            self._waiting.popleft().set()
