"""A simulated OpenAI-compatible chat completions server, for tests and benchmarks.

Real HTTP on loopback, so the real ``openai`` client and its retries are exercised. It
answers in the JSON schema the request asks for, scoring text with a small keyword
lexicon (deterministic), and can be told to misbehave: rate limits with Retry-After,
5xx, timeouts, malformed or cut-off JSON, refusals, missing items, a gullible model
that obeys prompt injection.

    python -m worker.testing.fake_llm --port 8099 --latency-ms 300 --jitter-ms 50
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.models import CATEGORIES

LEXICON: dict[str, tuple[str, ...]] = {
    "harassment": ("idiot", "stupid", "loser", "moron", "shut up", "ugly", "pathetic"),
    "harassment/threatening": ("kill you", "hurt you", "find you", "you're dead", "beat you"),
    "hate": ("subhuman", "vermin", "go back to your country", "inferior race"),
    "hate/threatening": ("exterminate", "gas them", "wipe them out"),
    "illicit": ("buy drugs", "cook meth", "launder money", "stolen cards"),
    "illicit/violent": ("make a bomb", "build a bomb", "untraceable gun"),
    "self-harm": ("cut myself", "self harm", "hurt myself"),
    "self-harm/intent": ("want to die", "kill myself", "end my life"),
    "self-harm/instructions": ("how to kill yourself", "lethal dose"),
    "sexual": ("nude", "porn", "sex", "naked", "horny"),
    "sexual/minors": ("underage", "minor nude", "child porn"),
    "violence": ("kill", "stab", "shoot", "murder", "beat", "punch", "blood"),
    "violence/graphic": ("gore", "dismember", "guts", "decapitat"),
}
_DIRECTIVE = re.compile(r"\[\[score:([^\]]*)\]\]")
_ITEM = re.compile(r"^(\d+): (\".*\")$", re.MULTILINE)
_TAG = re.compile(r" #(\d+)$")
FAULTS = ("429", "500", "timeout", "malformed", "truncated", "refusal", "missing", "disconnect")


def score_text(text: str) -> dict[str, int]:
    """0-100 per category; ``[[score:hate=95]]`` in the text sets a score exactly."""
    lowered = text.lower()
    scores = {c: 1 for c in CATEGORIES}
    for category, words in LEXICON.items():
        if any(w in lowered for w in words):
            scores[category] = 88
    for directive in _DIRECTIVE.findall(text):
        for part in directive.split(","):
            name, _, value = part.partition("=")
            if name.strip() in scores:
                scores[name.strip()] = int(value)
    return scores


@dataclass
class FakeLLMState:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    gullible: bool = False
    timeout_s: float = 30.0
    faults: deque[str] = field(default_factory=deque)
    fault_rates: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)
    # With ``record`` on (the benchmark turns it on), each answered call is kept as
    # (its own latency in ms, the " #<n>" tags ending its items' texts), so the benchmark
    # can subtract the simulator's actual latency of each message's call from its
    # end-to-end latency instead of the configured mean.
    record: bool = False
    calls: list[tuple[float, list[int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.faults:
                fault = self.faults.popleft()
            else:
                fault = next(
                    (f for f, rate in self.fault_rates.items() if random.random() < rate), None
                )
            if fault:
                self.by_fault[fault] = self.by_fault.get(fault, 0) + 1
            return fault


def _count_tokens(text: str) -> int:
    try:
        from worker._prompt import count_tokens

        return count_tokens(text)
    except Exception:  # no tokenizer data offline: a rough estimate is fine for a fake
        return max(1, len(text) // 4)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are two writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (~40 ms on Linux) on every response
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/_stats"):  # the recorded calls, then forget them
            state = self.server.state
            with state.lock:
                calls, state.calls = state.calls, []
            self._send(200, {"requests": state.requests, "calls": calls})
            return
        self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path.endswith("/_control"):
            self.server.control(request)
            self._send(200, {"ok": True})
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        state = self.server.state
        fault = state.next_fault()
        delay = state.latency_ms + random.uniform(-state.jitter_ms, state.jitter_ms)
        time.sleep(max(delay, 0) / 1000)
        if fault == "429":
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                       {"Retry-After": "0.2"})
            return
        if fault == "500":
            self._send(500, {"error": {"message": "upstream failure", "type": "server_error"}})
            return
        if fault == "timeout":
            time.sleep(state.timeout_s)
            self._send(504, {"error": {"message": "too slow"}})
            return
        if fault == "disconnect":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        reply = self.server.complete(request, fault)
        tags = reply.pop("_tags")
        self._send(200, reply)
        if state.record:
            own_ms = (time.monotonic() - started) * 1000
            with state.lock:
                state.calls.append((own_ms, tags))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # a worker opens dozens of connections at once

    def __init__(self, address: tuple[str, int], state: FakeLLMState) -> None:
        super().__init__(address, _Handler)
        self.state = state

    def control(self, request: dict[str, Any]) -> None:
        state = self.state
        with state.lock:
            state.faults.extend(request.get("faults", []))
            state.fault_rates.update(request.get("rates", {}))
            for key in ("latency_ms", "jitter_ms", "gullible", "timeout_s", "record"):
                if key in request:
                    setattr(state, key, request[key])

    def complete(self, request: dict[str, Any], fault: str | None) -> dict[str, Any]:
        messages = request.get("messages", [])
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        schema = (request.get("response_format") or {}).get("json_schema", {})
        items = [json.loads(raw) for _, raw in _ITEM.findall(user)]
        if schema.get("name") == "moderation" and items:
            entries = []
            for n, text in enumerate(items):
                scores = score_text(text)
                if self.state.gullible and "allow" in text.lower():
                    scores = {c: 0 for c in CATEGORIES}
                entries.append({"i": n, "s": [scores[c] for c in CATEGORIES]})
            if fault == "missing" and len(entries) > 1:
                entries.pop()
            content = json.dumps({"r": entries}, separators=(",", ":"))
        else:  # one text, a schema with one number per category
            items = [user]
            scores = score_text(user)
            content = json.dumps({c: scores[c] / 100 for c in CATEGORIES})
        finish = "stop"
        refusal = None
        if fault == "malformed":
            content = content[: len(content) // 2] + "}}oops"
        elif fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "refusal":
            content, refusal = None, "I can't help with that."
        prompt_tokens = sum(_count_tokens(str(m.get("content", ""))) + 4 for m in messages)
        completion_tokens = _count_tokens(content or refusal or "")
        with self.state.lock:
            self.state.items += len(items)
            self.state.prompt_tokens += prompt_tokens
            self.state.completion_tokens += completion_tokens
        tags = (
            [int(m.group(1)) for t in items if (m := _TAG.search(t))] if self.state.record else []
        )
        return {
            "_tags": tags,
            "id": f"chatcmpl-fake-{self.state.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }


class FakeLLM:
    """Start on a free loopback port; ``base_url`` is what OPENAI_BASE_URL should be."""

    def __init__(self, port: int = 0, **state: Any) -> None:
        _count_tokens("warm up the tokenizer now, not inside the first request")
        self.state = FakeLLMState(**state)
        self._server = _Server(("127.0.0.1", port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

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
        self._server.control({"faults": list(faults)})

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=50.0)
    args = parser.parse_args()
    server = FakeLLM(args.port, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms)
    print(f"fake LLM on {server.base_url}", flush=True)
    # as the worker does (worker._heap): no full-collection pauses in the stand-in for a
    # remote API, which a benchmark would count as the worker's added latency
    gc.collect()
    gc.freeze()
    server._server.serve_forever()


if __name__ == "__main__":
    main()
