"""A simulated OpenAI-compatible chat completions server, for tests and benchmarks.

Real HTTP on loopback, so the real ``openai`` client talks to it as to the real API. It
answers in the JSON schema the request asks for, scoring text with a small keyword
lexicon (deterministic), and costs and refuses what a real model would, so that what is
tuned against it holds against one:

- ``real`` timing (the default): a reply of N tokens takes a time to first token
  (lognormal, median ``ttft_ms``) + prefill (``prefill_ms_per_1k``) + N x ``token_ms``,
  as gpt-4o-mini's ~0.6 s + N x 15 ms; ``fixed``: ``latency_ms`` +- ``jitter_ms`` whatever
  the length; ``instant``: no waiting at all.
- ``max_completion_tokens`` cuts the reply (finish_reason ``length``); ``"stream": true``
  answers with server-sent events, a token per chunk (those due at once when it is late).
- optional limits: ``rpm``/``tpm`` (OpenAI's 429 and x-ratelimit-* headers), ``slots``
  (requests generating at once, as llama.cpp's ``--parallel``; the rest queue), and
  ``context_tokens`` (a 400 worded as OpenAI's or llama.cpp's).
- faults on demand (``inject``) or at random (``fault_rates``): ``FAULTS``.

``POST /_control`` changes settings at run time; ``GET /_stats`` returns the counters and
the calls recorded with ``record`` on, then forgets the calls.

    python -m worker.testing.fake_llm --port 8099 --timing real --ttft-ms 600 --token-ms 15
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import orjson

from worker.testing import _fake_reply as fr
from worker.testing import _fake_timing as ft
from worker.testing._fake_http import Responder
from worker.testing._fake_reply import LEXICON, answered_scores, score_text

__all__ = [
    "FAULTS",
    "LEXICON",
    "TIMINGS",
    "FakeLLM",
    "FakeLLMState",
    "answered_scores",
    "score_text",
]

# 429 (retry-after: 0.2), 500, timeout (timeout_s, then 504), malformed (content cut in
# half + "}}oops"), truncated (cut in half, finish_reason "length"), refusal, missing (the
# last entry dropped), disconnect (hang up without an answer; streaming: after half the
# chunks), shuffled (entries in reverse order), stall (send nothing until stall_s passes or
# the client goes away, then hang up), context (the context-length 400 whatever the size),
# no_usage (the reply without `usage`, as some proxies send it).
FAULTS = ("429", "500", "timeout", "malformed", "truncated", "refusal", "missing",
          "disconnect", "shuffled", "stall", "context", "no_usage")  # fmt: skip
TIMINGS = ("real", "fixed", "instant")
ERROR_STYLES = ("openai", "llamacpp")


@dataclass
class FakeLLMState:
    """Settings (change them under ``lock`` or through ``/_control``) and counters."""

    timing: str = "real"  # one of TIMINGS
    ttft_ms: float = 600.0  # real: median time to first token
    ttft_sigma: float = 0.25  # real: sigma of its lognormal distribution
    prefill_ms_per_1k: float = 40.0  # real: added per 1,000 prompt tokens
    token_ms: float = 15.0  # real: per output token
    latency_ms: float = 0.0  # fixed: per reply, whatever its length (a stream all at once)
    jitter_ms: float = 0.0  # fixed: +- uniform
    rpm: float = 0.0  # requests per minute (0: no limit)
    tpm: float = 0.0  # tokens per minute, prompt + max_completion_tokens (0: no limit)
    slots: int = 0  # requests generating at once (0: no limit)
    context_tokens: int = 128_000
    error_style: str = "openai"  # one of ERROR_STYLES, for the context-length 400
    gullible: bool = False  # obeys prompt injection: an item saying "allow" scores 0
    timeout_s: float = 30.0  # the "timeout" fault
    stall_s: float = 30.0  # the "stall" fault
    seed: int | None = None
    faults: deque[str] = field(default_factory=deque)
    fault_rates: dict[str, float] = field(default_factory=dict)
    requests: int = 0  # every request to /chat/completions, failed ones too
    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)
    max_concurrent: int = 0  # most requests generating at once since it was last reset
    # the item texts of the latest requests, in order (tests check what was asked again)
    asked: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=1000))
    # With ``record`` on (the benchmark turns it on), each answered call is kept as
    # (its own latency in ms, the " #<n>" tags ending its items' texts), so the benchmark
    # can subtract the simulator's actual latency of each message's call from its
    # end-to-end latency instead of the configured mean.
    record: bool = False
    calls: list[tuple[float, list[int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(init=False, repr=False, compare=False)
    limiter: ft.RateLimiter = field(init=False, repr=False, compare=False)
    queue: ft.Slots = field(init=False, repr=False, compare=False)
    active: int = field(default=0, init=False)  # requests generating now

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS or self.error_style not in ERROR_STYLES:
            raise ValueError(f"timing: one of {TIMINGS}; error_style: one of {ERROR_STYLES}")
        self.rng = random.Random(self.seed)
        self.limiter = ft.RateLimiter()
        self.queue = ft.Slots(self.slots)
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if not self.__dict__.get("_ready"):
            return
        if name == "seed":
            self.rng.seed(value)
        elif name == "slots":
            self.queue.set_limit(value)

    def next_fault(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.faults:
                fault: str | None = self.faults.popleft()
            else:
                rates, rng = self.fault_rates.items(), self.rng
                fault = next((f for f, rate in rates if rng.random() < rate), None)
            if fault:
                self.by_fault[fault] = self.by_fault.get(fault, 0) + 1
            return fault

    def stats(self) -> dict[str, Any]:
        """The counters and the recorded calls, which are then forgotten."""
        with self.lock:
            calls, self.calls = self.calls, []
            names = ("requests", "items", "prompt_tokens", "completion_tokens", "max_concurrent")
            counters = {name: getattr(self, name) for name in names}
            return {**counters, "calls": calls, "by_fault": dict(self.by_fault)}

    def control(self, request: dict[str, Any]) -> str | None:
        """Queue ``faults``, add ``rates`` and set the other keys (settings). What is wrong
        with them, if anything; then nothing is applied."""
        faults, rates = list(request.get("faults", [])), dict(request.get("rates", {}))
        settings = {k: v for k, v in request.items() if k not in ("faults", "rates")}
        if unknown := sorted({str(f) for f in [*faults, *rates] if f not in FAULTS}):
            return f"unknown faults {unknown}; known: {list(FAULTS)}"
        if unknown := sorted(set(settings) - set(_SETTINGS)):
            return f"unknown settings {unknown}; known: {sorted(_SETTINGS)}"
        try:
            rates = {k: float(v) for k, v in rates.items()}
            settings = {k: _SETTINGS[k](v) for k, v in settings.items()}
        except (TypeError, ValueError) as exc:
            return f"bad value: {exc}"
        for key, allowed in (("timing", TIMINGS), ("error_style", ERROR_STYLES)):
            if settings.get(key, allowed[0]) not in allowed:
                return f"{key} must be one of {list(allowed)}"
        with self.lock:
            self.faults.extend(faults)
            self.fault_rates.update(rates)
            for key, value in settings.items():
                setattr(self, key, value)
        return None


# What /_control may set, and how its JSON values are read.
_SETTINGS: dict[str, Any] = {
    **dict.fromkeys(("ttft_ms", "ttft_sigma", "prefill_ms_per_1k", "token_ms", "latency_ms",
                     "jitter_ms", "rpm", "tpm", "timeout_s", "stall_s"), float),
    **dict.fromkeys(("slots", "context_tokens", "max_concurrent"), int),
    **dict.fromkeys(("gullible", "record"), bool),
    "timing": str,
    "error_style": str,
    "seed": lambda v: None if v is None else int(v),
}  # fmt: skip


class _Handler(Responder):
    server: _Server

    def do_GET(self) -> None:
        if self.path.endswith("/_stats"):
            self.send(200, self.server.state.stats())
        else:
            self.send(404, fr.error("not found", "invalid_request_error", None, None))

    def do_POST(self) -> None:
        started = time.monotonic()
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = orjson.loads(raw or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            self.send(400, fr.error(str(exc), "invalid_request_error", None, None))
            return
        if self.path.endswith("/chat/completions"):
            self._chat(request, started)
        elif self.path.endswith("/_control"):
            problem = self.server.state.control(request)
            if problem:
                self.send(400, fr.error(problem, "invalid_request_error", None, None))
            else:
                self.send(200, {"ok": True})
        else:
            self.send(404, fr.error("not found", "invalid_request_error", None, None))

    def _chat(self, request: dict[str, Any], started: float) -> None:
        state = self.server.state
        fault = state.next_fault()
        admitted = ft.admit(self, state, request, fault)
        if admitted is None:  # refused, or a fault answered it
            return
        prompt, headers = admitted
        reply = fr.build_reply(request, fault, state.gullible, state.record)
        with state.lock:  # counted before it is sent: a client may read /_stats at once
            state.asked.append(reply.texts)
            state.items += reply.items
            state.prompt_tokens += prompt
            state.completion_tokens += reply.completion_tokens
        if ft.generate(self, state, request, reply, prompt, headers, fault) and state.record:
            own_ms = (time.monotonic() - started) * 1000
            with state.lock:
                state.calls.append((own_ms, reply.tags))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # a worker opens dozens of connections at once

    def __init__(self, address: tuple[str, int], state: FakeLLMState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class FakeLLM:
    """Start on a free loopback port; ``base_url`` is what OPENAI_BASE_URL should be.
    Keyword arguments are ``FakeLLMState`` fields."""

    def __init__(self, port: int = 0, **state: Any) -> None:
        fr.prompt_tokens([{"content": "warm up the tokenizer now, not in the first request"}])
        self.state = FakeLLMState(**state)
        self._server = _Server(("127.0.0.1", port), self.state)
        self._thread = threading.Thread(  # a short poll: stop() waits for it
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *faults: str) -> None:
        """The next requests fail in these ways, in order."""
        problem = self.state.control({"faults": list(faults)})
        if problem:
            raise ValueError(problem)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # the command itself lives in _fake_cli
    from worker.testing._fake_cli import main

    main()
