"""The wire contract: what producers send and what consumers receive.

These models are the single source of truth; ``schemas/*.json`` is generated from them
(``python -m worker schemas``) and a test fails when the two drift.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Final = "1"

Category = Literal[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]

# OpenAI's moderation taxonomy, in OpenAI's order, so verdicts can be swapped with its API.
CATEGORIES: tuple[Category, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class Action(StrEnum):
    """What the platform should do, least to most severe."""

    ALLOW = "allow"
    FLAG = "flag"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.FLAG: 1, Action.REVIEW: 2, Action.BLOCK: 3}


class Source(StrEnum):
    """Which stage decided the verdict."""

    RULES = "rules"
    CACHE = "cache"
    LLM = "llm"
    FALLBACK = "fallback"
    HUMAN = "human"  # a reviewer's decision, or an override made from one


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]

MAX_PREVIOUS = 5  # prior messages a request may carry as context
MAX_PREVIOUS_CHARS = 2000  # each


class Author(BaseModel):
    """Who wrote the message, as the platform knows them: what signal rules act on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Identifier = Field(description="The platform's id of the author (stable per account).")
    created_at: Annotated[AwareDatetime, Field(strict=False)] | None = Field(
        default=None,
        description="When the account was made (RFC 3339 with an offset); gives "
        "account_age_days when that is not sent.",
    )
    account_age_days: float | None = Field(default=None, ge=0, description="Age of the account.")
    trust: float | None = Field(
        default=None, ge=0, le=1, description="The platform's trust in the author, 0 to 1."
    )
    tier: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None, description="The platform's name for the author's standing ('new', 'vip')."
    )
    exempt: bool = Field(
        default=False,
        description="A moderator or other author the tenant exempts: signal rules marked "
        "'exempt: skip' (the default) do not apply.",
    )


class PriorMessage(BaseModel):
    """An earlier message of the conversation, given as context (never moderated)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Annotated[str, StringConstraints(max_length=MAX_PREVIOUS_CHARS)]
    author_id: Identifier | None = None


class ModerationRequest(BaseModel):
    """One message to moderate, as published to ``moderation.requests``."""

    model_config = ConfigDict(extra="forbid", title="ModerationRequest", strict=True)

    id: Identifier = Field(description="The producer's own id, echoed in the verdict.")
    text: str = Field(description="The user text to moderate (UTF-8).")
    tenant: Identifier | None = Field(
        default=None, description="Selects a per-tenant policy; null means the base policy."
    )
    context: str | None = Field(
        default=None,
        description="Optional surrounding text (e.g. the parent message) shown to the LLM "
        "as context; it is not itself moderated.",
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Opaque object echoed back unchanged in the verdict."
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}$",
        description="ISO 639-1 code of the text when the producer knows it (the author's "
        "locale, a channel's language); the worker detects it otherwise.",
    )
    author: Author | None = Field(
        default=None, description="Who wrote it: per-author counts and conditions need it."
    )
    conversation_id: Identifier | None = Field(
        default=None, description="The thread, channel or chat the message belongs to."
    )
    reply_to: Identifier | None = Field(
        default=None, description="The id of the message this one answers."
    )
    previous: list[PriorMessage] | None = Field(
        default=None,
        max_length=MAX_PREVIOUS,
        description="A few earlier messages of the conversation, oldest first. Only their "
        "text reaches the LLM, as context, and only when the message is a reply or the "
        "policy asks for it (llm_context).",
    )
    schema_version: Literal["1"] | None = Field(default=None, description="Contract version.")


class Span(BaseModel):
    """Character offsets into the original request text (Python str indices, end exclusive)."""

    start: int
    end: int


class RuleMatch(BaseModel):
    rule_id: str
    action: Literal["block", "review", "flag", "allow", "llm"]
    category: Category | None = None
    spans: list[Span] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="Shown to moderators.")


class FiredSignal(BaseModel):
    """A signal rule that changed (or confirmed) the verdict, and the counts it saw."""

    rule_id: str
    action: Literal["block", "review", "flag", "allow"] = Field(
        description="The action the rule asked for (its floor, or where it escalated to)."
    )
    reason: str | None = None
    observed: dict[str, float | str | bool] = Field(
        default_factory=dict,
        description="The values its conditions compared, e.g. {'messages_10s': 14}.",
    )


class Usage(BaseModel):
    """This message's share of the LLM call's token usage (zero when no LLM was called)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    llm_calls: float = Field(
        default=0.0, description="This message's share of LLM calls (1/batch size)."
    )


class EarlierDecision(BaseModel):
    """A reviewer's decision on the same text (same tenant) under an earlier policy
    version: not applied, since the policy changed since."""

    decision: Literal["allow", "flag", "review", "block"]
    categories: list[Category] = Field(default_factory=list)
    reviewer: str
    request_id: str = Field(description="The request the reviewer decided.")
    policy_version: str


class Verdict(BaseModel):
    """One verdict per request, published to the ``moderation.verdicts`` topic exchange."""

    model_config = ConfigDict(title="ModerationVerdict")

    id: str
    tenant: str | None
    action: Action
    flagged: bool = Field(description="True when action is not allow.")
    categories: dict[Category, bool]
    category_scores: dict[Category, float]
    source: Source
    rule_matches: list[RuleMatch] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="For moderators.")
    user_reason: str | None = Field(default=None, description="Safe to show the author.")
    model: str | None = None
    policy_version: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = Field(description="From receipt by the worker to verdict built.")
    truncated: bool = Field(default=False, description="Text was cut to the token budget.")
    language: str | None = Field(
        default=None,
        description="ISO 639-1 code of the text (given by the producer, or detected); "
        "null when the text is too short or mixed to tell.",
    )
    redelivered: bool = Field(
        default=False, description="The broker delivered this request more than once."
    )
    author_id: str | None = Field(default=None, description="The request's author.id.")
    signals: list[FiredSignal] = Field(
        default_factory=list,
        description="The signal rules (rate, duplicate, history, author) that fired.",
    )
    signals_unavailable: bool = Field(
        default=False,
        description="The counters (Redis) could not be asked: rate, duplicate and history "
        "conditions were not evaluated for this verdict.",
    )
    shadow: dict[str, Any] | None = Field(
        default=None, description="What a shadow policy would have decided (not acted on)."
    )
    earlier_decision: EarlierDecision | None = Field(
        default=None,
        description="A reviewer decided this text under an earlier policy version. When "
        "that decision differs from this verdict's action, the verdict is also sent to "
        "the review queue, so a person sees what the policy change does.",
    )
    schema_version: Literal["1"] = SCHEMA_VERSION
    metadata: dict[str, Any] | None = None


class Decision(BaseModel):
    """A reviewer's decision on a reviewed request, published to ``moderation.decisions``
    (or made on the review page). Stored once per (request, reviewer)."""

    model_config = ConfigDict(extra="forbid", title="ModerationDecision", strict=True)

    id: Identifier = Field(description="The request's id (the verdict's).")
    tenant: Identifier | None = Field(default=None, description="The request's tenant.")
    decision: Literal["allow", "flag", "review", "block"] = Field(
        description="The action the reviewer chose ('review': escalate to another person)."
    )
    categories: list[Category] = Field(
        default_factory=list, description="The categories the reviewer says apply."
    )
    reviewer: Identifier
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None
    schema_version: Literal["1"] | None = None
