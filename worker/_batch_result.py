"""What classifying a batch produced: scores per item, and what the calls cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker._reply import Scores


@dataclass(slots=True)
class ItemUsage:
    """One item's share of the calls it was in. Estimated from its own length (its prompt
    lines, its answer) and the calls' shared parts split evenly; when a reply is
    streamed, an answer is handed on before the endpoint reports the call's usage."""

    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    calls: float = 0.0


@dataclass(slots=True)
class CallUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0  # HTTP requests, failed ones included
    call_seconds: list[float] = field(default_factory=list)  # answered calls

    def add(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.prompt_tokens += count(usage.get("prompt_tokens"))
        self.completion_tokens += count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            self.cached_tokens += count(details.get("cached_tokens"))


def count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class BatchResult:
    """Scores per item (None where the LLM gave no valid answer) and what it cost."""

    scores: list[Scores | None]
    errors: list[str | None]
    usage: CallUsage = field(default_factory=CallUsage)  # as the endpoint reported it
    items: list[ItemUsage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.items:
            self.items = [ItemUsage() for _ in self.scores]


@dataclass(slots=True)
class Job:
    indices: list[int]  # positions in the classify() call's items
    asks: int = 0  # how often these items were asked already
