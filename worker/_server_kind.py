"""Which kind of OpenAI-compatible server the endpoint is, and what that changes.

They all take the same chat-completions request, but not the same load. OpenAI's API
and vLLM batch requests continuously: many calls in flight are what they serve best.
llama.cpp's ``llama-server`` runs a fixed number of slots (``-np``); every call beyond
them waits in its queue for a whole call ahead of it, so calls past the slot count add
latency and time-outs, never throughput. Ollama runs ``OLLAMA_NUM_PARALLEL`` requests
per model (1-4 by default) the same way. Each says what it is at a URL of its own,
which one probe at start reads (``MODERATION_LLM_SERVER=auto``); naming the kind skips
the probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import structlog

log = structlog.get_logger("worker.classify")

Kind = Literal["openai", "vllm", "ollama", "llamacpp"]

_OLLAMA_PARALLEL = 4  # OLLAMA_NUM_PARALLEL's largest default


@dataclass(frozen=True, slots=True)
class ServerKind:
    kind: Kind
    slots: int | None = None  # requests it generates at once, when it says

    def max_calls(self, configured: int) -> int:
        """Calls in flight worth having: the configured most, or the server's slots."""
        if self.kind == "llamacpp" and self.slots:
            return max(1, min(configured, self.slots))
        if self.kind == "ollama":
            return max(1, min(configured, _OLLAMA_PARALLEL))
        return configured


def detect(base_url: str | None, setting: str, timeout_s: float = 2.0) -> ServerKind:
    """The kind as set, or as the server says (``auto``); OpenAI's own API unprobed."""
    if setting != "auto":
        kind = ServerKind(setting)  # type: ignore[arg-type]
        if kind.kind == "llamacpp" and base_url:
            return _probe(base_url, timeout_s) or kind
        return kind
    if not base_url or urlsplit(base_url).hostname == "api.openai.com":
        return ServerKind("openai")
    found = _probe(base_url, timeout_s) or ServerKind("openai")
    log.info("llm_server_detected", kind=found.kind, slots=found.slots)
    return found


def _probe(base_url: str, timeout_s: float) -> ServerKind | None:
    from worker._llm_call import _http as httpx  # the openai client's own HTTP library

    root = _root(base_url)
    probes: list[tuple[str, Kind]] = [("/props", "llamacpp"), ("/api/version", "ollama"),
                                      ("/version", "vllm")]  # fmt: skip
    try:
        with httpx.Client(timeout=timeout_s) as client:
            for path, kind in probes:
                try:
                    response = client.get(root + path)
                except httpx.HTTPError:
                    return None  # not answering at all: leave it to the first call
                if response.status_code != 200:
                    continue
                try:
                    body = response.json()
                except ValueError:
                    continue
                if not isinstance(body, dict):
                    continue
                if kind == "llamacpp" and "total_slots" in body:
                    slots = body.get("total_slots")
                    return ServerKind(kind, slots if isinstance(slots, int) else None)
                if kind in ("ollama", "vllm") and "version" in body:
                    return ServerKind(kind)
    except httpx.HTTPError:
        return None
    return None


def _root(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port``: the servers' own paths."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
