"""Replies of the simulated LLM: what it writes, the bodies and stream frames that carry
it, its errors, and the HTTP writes. Private to ``worker.testing.fake_llm``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from worker._prompt import _encoding, count_tokens, encode_entry
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
_ITEM = re.compile(r"^(\d+): (\".*\")$", re.MULTILINE)  # context lines are "<n>c: ..."
_TAG = re.compile(r" #(\d+)$")
_CHARS_PER_TOKEN = 4  # without the tokenizer's data
REFUSAL = "I can't help with that."


def score_text(text: str) -> dict[str, int]:
    """0-100 per category; ``[[score:hate=95]]`` in the text sets a score exactly."""
    lowered = text.lower()
    scores: dict[str, int] = {c: 1 for c in CATEGORIES}
    for category, words in LEXICON.items():
        if any(w in lowered for w in words):
            scores[category] = 88
    for directive in _DIRECTIVE.findall(text):
        for part in directive.split(","):
            name, _, value = part.partition("=")
            if name.strip() in scores:
                scores[name.strip()] = int(value)
    return scores


@lru_cache(maxsize=512)  # the system prompt is the same in every request
def answered_scores(text: str, gullible: bool = False) -> tuple[float, ...]:
    """The scores a worker reads from this simulator's answer for ``text`` (what the reply
    format can say: percentages of 10 or more, a subcategory lifting its parent)."""
    from worker._reply import parse_entry

    scores = score_text(text)
    if gullible and "allow" in text.lower():
        scores = {c: 0 for c in CATEGORIES}
    answer = parse_entry(encode_entry(0, scores), 1)
    assert answer is not None
    return answer.scores


def _count(text: str) -> int:
    return count_tokens(text)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(_count(str(m.get("content", ""))) + 4 for m in messages)


def completion_cap(request: dict[str, Any]) -> int | None:
    """``max_completion_tokens``, or the legacy ``max_tokens``, or None."""
    cap = request.get("max_completion_tokens")
    if cap is None:
        cap = request.get("max_tokens")
    return None if cap is None else max(0, int(cap))


@dataclass(slots=True)
class Reply:
    text: str  # the content, or the refusal
    refusal: bool
    finish: str
    completion_tokens: int
    tokens: list[int] | None  # o200k ids of ``text``; None without the tokenizer's data
    items: int
    tags: list[int] = field(default_factory=list)
    texts: tuple[str, ...] = ()  # the items asked about (the whole prompt for the naive one)


def build_reply(request: dict[str, Any], fault: str | None, gullible: bool, record: bool) -> Reply:
    """What the model writes for ``request``, altered by ``fault``, cut to the cap."""
    messages = request.get("messages") or []
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    user = user if isinstance(user, str) else str(user)
    schema = (request.get("response_format") or {}).get("json_schema") or {}
    items = [(int(n), json.loads(raw)) for n, raw in _ITEM.findall(user)]
    if schema.get("name") == "moderation" and items:
        entries = []
        for n, text in items:
            scores = score_text(text)
            if gullible and "allow" in text.lower():
                scores = {c: 0 for c in CATEGORIES}
            entries.append(encode_entry(n, scores))
        if fault == "missing" and len(entries) > 1:
            entries.pop()
        elif fault == "shuffled":
            entries.reverse()
        content = json.dumps({"r": entries}, separators=(",", ":"))
        texts = [text for _, text in items]
    else:  # the naive design: one text, one number per category
        texts = [user]
        scores = score_text(user)
        order = list(reversed(CATEGORIES)) if fault == "shuffled" else list(CATEGORIES)
        content = json.dumps({c: scores[c] / 100 for c in order})
    finish, refusal = "stop", False
    if fault == "malformed":
        content = content[: len(content) // 2] + "}}oops"
    elif fault == "truncated":
        content, finish = content[: len(content) // 2], "length"
    elif fault == "refusal":
        content, refusal = REFUSAL, True
    cap = completion_cap(request)
    encoding = _encoding()
    tokens: list[int] | None = None
    if encoding is not None:
        tokens = encoding.encode(content, disallowed_special=())
        if cap is not None and len(tokens) > cap:
            tokens = tokens[:cap]
            content, finish = encoding.decode(tokens), "length"
        generated = len(tokens)
    else:
        generated = count_tokens(content)
        if cap is not None and generated > cap:
            content, finish, generated = content[: cap * _CHARS_PER_TOKEN], "length", cap
    tags = [int(m.group(1)) for t in texts if (m := _TAG.search(t))] if record else []
    return Reply(content, refusal, finish, generated, tokens, len(texts), tags, tuple(texts))


def pieces(reply: Reply) -> list[tuple[str, int]]:
    """The reply as the model writes it: (text, tokens written so far), one per token. The
    content is ASCII (JSON as ``json.dumps`` writes it), so each token decodes alone."""
    if reply.tokens is None:
        step = _CHARS_PER_TOKEN
        chunks = [reply.text[i : i + step] for i in range(0, len(reply.text), step)]
        return [(chunk, i) for i, chunk in enumerate(chunks, 1)]
    raw = _encoding().decode_tokens_bytes(reply.tokens)  # type: ignore[union-attr]
    return [(b.decode("utf-8", "replace"), i) for i, b in enumerate(raw, 1)]


def usage(reply: Reply, prompt: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": prompt + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def completion_body(
    reply: Reply, ident: str, model: str, created: int, prompt: int, with_usage: bool = True
) -> bytes:
    """The non-streamed reply; ``with_usage`` False: as a proxy that drops ``usage``."""
    message = {
        "role": "assistant",
        "content": None if reply.refusal else reply.text,
        "refusal": reply.text if reply.refusal else None,
    }
    return orjson.dumps(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
            **({"usage": usage(reply, prompt)} if with_usage else {}),
        }
    )


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


CHUNKED_END = b"0\r\n\r\n"
DONE = b"data: [DONE]\n\n"


class Frames:
    """Server-sent events of one streamed reply, from templates: per token, a bytes join."""

    __slots__ = ("_head", "_start", "_tail")

    def __init__(self, ident: str, model: str, created: int, refusal: bool) -> None:
        start = b'data: {"id":%b,"object":"chat.completion.chunk","created":%d,"model":%b,' % (
            orjson.dumps(ident),
            created,
            orjson.dumps(model),
        )
        key = b"refusal" if refusal else b"content"
        self._start = start
        self._head = start + b'"choices":[{"index":0,"delta":{"role":"assistant","%b":' % key
        self._tail = b'},"finish_reason":null}]}\n\n'

    def delta(self, text: str) -> bytes:
        return self._head + orjson.dumps(text) + self._tail

    def end(self, finish: str, usage: dict[str, Any] | None) -> bytes:
        """The finish_reason chunk, the usage chunk if asked for, and [DONE]."""
        out = self._start + b'"choices":[{"index":0,"delta":{},"finish_reason":%b}]}\n\n' % (
            orjson.dumps(finish)
        )
        if usage is not None:
            out += self._start + b'"choices":[],"usage":%b}\n\n' % orjson.dumps(usage)
        return out + DONE


def error(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    """An error body as OpenAI writes it."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# The HTTP errors of faults: status, body, headers.
_RATE = error("Rate limit reached (simulated).", "requests", None, "rate_limit_exceeded")
FAULT_ERRORS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "429": (429, _RATE, {"retry-after": "0.2", "retry-after-ms": "200"}),
    "500": (500, error("The server had an error.", "server_error", None, None), {}),
    "timeout": (504, error("Gateway timeout.", "server_error", None, None), {}),
}


def too_large(style: str, n_ctx: int, prompt: int, cap: int | None) -> bool:
    """llama.cpp checks the prompt alone; OpenAI the prompt and the completion asked for."""
    return prompt > n_ctx if style == "llamacpp" else prompt + (cap or 0) > n_ctx


def context_error(style: str, n_ctx: int, prompt: int, cap: int | None) -> dict[str, Any]:
    """The 400 of a request larger than the context, as OpenAI or llama.cpp words it."""
    if style == "llamacpp":
        return {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt,
                "n_ctx": n_ctx,
            }
        }
    return error(
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{prompt + (cap or 0)} tokens ({prompt} in the messages, {cap or 0} in the "
        "completion). Please reduce the length of the messages or completion.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )
