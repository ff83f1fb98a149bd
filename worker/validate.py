"""Stage 1: raw broker bytes -> a ModerationRequest, or a clear reason it is unprocessable.

Everything here is cheap and happens before any other work, so hostile input costs
almost nothing and never reaches the LLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from worker.models import ModerationRequest
from worker.settings import Settings

_TEXT_ENCODINGS = {"", "utf-8", "utf8", "7bit", "8bit", "binary"}


class DeadReason(StrEnum):
    """Machine-readable reason a message went to the dead-letter queue."""

    TOO_LARGE = "too_large"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    INVALID_FIELDS = "invalid_fields"
    TEXT_TOO_LONG = "text_too_long"
    METADATA_TOO_LARGE = "metadata_too_large"
    INVALID_UNICODE = "invalid_unicode"
    TENANT_NOT_ALLOWED = "tenant_not_allowed"
    INVALID_DECISION = "invalid_decision"  # moderation.decisions: not a Decision
    UNKNOWN_REQUEST = "unknown_request"  # moderation.decisions: no such review item
    INTERNAL_ERROR = "internal_error"


class InvalidMessage(Exception):
    def __init__(self, reason: DeadReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Envelope:
    """A message as it came off the broker (or a line of a file), before validation."""

    body: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None  # the AMQP property, which RabbitMQ checks against the login


@dataclass(slots=True)
class DeadLetter:
    """A request that cannot be moderated, and why: published to the dead-letter queue
    with its original bytes."""

    envelope: Envelope
    reason: DeadReason
    detail: str
    request_id: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {literal[:20]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in object")
    return obj


# One decoder for every message: ``json.loads`` with hooks builds a new one per call.
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite, object_pairs_hook=_no_duplicates
)

# Re-serialising metadata (json.dumps, ", " and ": " separators) grows it at most this much
# over its raw bytes: strings never grow, a separator adds one byte, and the worst number is
# "1e15" (4 bytes) -> "1000000000000000.0" (18). A smaller body cannot break the limit.
_METADATA_GROWTH = 5


def _maybe_surrogates(decoded: str) -> bool:
    """Lone surrogates can only come from a \\uD800-\\uDFFF escape (UTF-8 cannot carry them)."""
    return "\\ud" in decoded or "\\uD" in decoded


def _strings(request: ModerationRequest) -> list[str | None]:
    """The request's own strings that reach a verdict, a key or a prompt."""
    out = [request.id, request.text, request.tenant, request.context]
    out += [request.conversation_id, request.reply_to]
    if request.author is not None:
        out += [request.author.id, request.author.tier]
    out += [m.text for m in request.previous or ()]
    out += [m.author_id for m in request.previous or ()]
    return out


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, stopping early once past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def validate(envelope: Envelope, settings: Settings) -> ModerationRequest:
    """Return the request or raise InvalidMessage; never anything else."""
    request = _validate(envelope, settings)
    if settings.tenant_users is None:
        return request
    return bind_tenant(request, envelope.user_id, settings.tenant_users)


def bind_tenant(
    request: ModerationRequest, user_id: str | None, tenant_users: dict[str, list[str]]
) -> ModerationRequest:
    """The request with the tenant its broker user may use: the one it names if allowed,
    else the user's first when it names none. A producer cannot choose another tenant's
    (laxer) policy: RabbitMQ refuses a ``user_id`` other than the connection's login."""
    if not user_id:
        raise InvalidMessage(
            DeadReason.TENANT_NOT_ALLOWED,
            "no user_id property: publish with user_id set to your broker user",
        )
    allowed = tenant_users.get(user_id)
    if not allowed:
        raise InvalidMessage(
            DeadReason.TENANT_NOT_ALLOWED, f"broker user {user_id!r} may use no tenant"
        )
    if request.tenant is None:
        if allowed[0] == "*":
            return request
        return request.model_copy(update={"tenant": allowed[0]})
    if request.tenant in allowed or "*" in allowed:
        return request
    raise InvalidMessage(
        DeadReason.TENANT_NOT_ALLOWED,
        f"broker user {user_id!r} may not use tenant {request.tenant!r}",
    )


def _validate(envelope: Envelope, settings: Settings) -> ModerationRequest:
    body = envelope.body
    if len(body) > settings.max_body_bytes:
        raise InvalidMessage(
            DeadReason.TOO_LARGE, f"body is {len(body)} bytes, limit {settings.max_body_bytes}"
        )
    encoding = (envelope.content_encoding or "").lower()
    if encoding not in _TEXT_ENCODINGS:
        raise InvalidMessage(
            DeadReason.UNSUPPORTED_ENCODING,
            f"content_encoding {encoding!r}; send uncompressed UTF-8 JSON",
        )
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            DeadReason.INVALID_UTF8, f"body is not UTF-8 (byte {exc.start})"
        ) from None
    try:
        data = _DECODER.decode(decoded)
    except RecursionError:
        raise InvalidMessage(DeadReason.TOO_DEEP, "JSON nesting too deep") from None
    except ValueError as exc:
        raise InvalidMessage(DeadReason.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise InvalidMessage(
            DeadReason.NOT_OBJECT, f"expected a JSON object, got {type(data).__name__}"
        )
    metadata = data.get("metadata")
    limit = settings.max_json_depth
    if (
        isinstance(metadata, dict | list)
        # nesting needs an opening bracket per level: too few in the body, no need to walk
        and decoded.count("{") + decoded.count("[") > limit
        and _depth(metadata, limit) > limit
    ):
        raise InvalidMessage(
            DeadReason.TOO_DEEP, f"metadata nested deeper than {settings.max_json_depth}"
        )
    try:
        request = ModerationRequest.model_validate(data)
    except ValidationError as exc:
        if any(err["type"] == "string_unicode" for err in exc.errors()):
            raise InvalidMessage(
                DeadReason.INVALID_UNICODE, "a string holds a lone surrogate (\\ud800-\\udfff)"
            ) from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)[:10]
        )
        raise InvalidMessage(DeadReason.INVALID_FIELDS, problems) from None
    if len(request.text) > settings.max_text_chars:
        raise InvalidMessage(
            DeadReason.TEXT_TOO_LONG,
            f"text is {len(request.text)} characters, limit {settings.max_text_chars}",
        )
    surrogates = _maybe_surrogates(decoded)
    if not surrogates and (
        request.metadata is None or len(body) * _METADATA_GROWTH <= settings.max_metadata_bytes
    ):
        return request  # nothing below can fail: skip the work (most messages)
    try:
        for value in _strings(request):
            if value:
                value.encode("utf-8")
        if request.metadata is not None:
            size = len(json.dumps(request.metadata, ensure_ascii=False).encode("utf-8"))
            if size > settings.max_metadata_bytes:
                raise InvalidMessage(
                    DeadReason.METADATA_TOO_LARGE,
                    f"metadata is {size} bytes, limit {settings.max_metadata_bytes}",
                )
    except UnicodeEncodeError:
        raise InvalidMessage(
            DeadReason.INVALID_UNICODE, "a string holds a lone surrogate (\\ud800-\\udfff)"
        ) from None
    return request
