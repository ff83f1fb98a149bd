"""How fast the LLM endpoint answers, as observed, and what that means for a call.

A reply takes the time to its first token (queueing, prefill) plus one token time per
output token; only the second part grows with the batch. From the calls it has seen,
``EndpointModel`` keeps moving estimates of both, of the output tokens a batch item
costs and of how the endpoint's tokenizer counts our replies against o200k. From those
follow the three numbers every call needs: how many items fit the latency budget, the
output cap that no valid reply can reach, and a time-out fitted to that cap instead of
one fixed number for every batch size.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from worker._prompt import worst_reply_tokens

_ALPHA = 0.15  # weight of a new observation in the moving estimates


@dataclass(frozen=True, slots=True)
class CallTiming:
    """One answered call: what it took and what it wrote."""

    items: int
    duration_s: float
    completion_tokens: int
    ttft_s: float | None = None  # measured when streamed
    reply_tokens_o200k: int = 0  # our own count of the content, for the tokenizer ratio
    request_chars: int = 0  # characters of the prompt, with prompt_tokens: chars per token
    prompt_tokens: int = 0


class EndpointModel:
    """Moving estimates of one endpoint's speed; thread-safe, cheap to read."""

    def __init__(
        self,
        ttft_s: float = 0.6,
        token_s: float = 0.015,
        tokens_per_item: float = 2.8,
        tokenizer_ratio: float = 1.0,
    ) -> None:
        self._lock = threading.Lock()
        self.ttft_s = ttft_s
        self.token_s = token_s
        self.tokens_per_item = tokens_per_item
        self.tokenizer_ratio = tokenizer_ratio
        self.chars_per_token = 4.0  # of prompts, in the endpoint's own count
        self.ttft_floor_s = ttft_s  # lowest smoothed time to first token lately
        self.calls = 0

    # -- learning ---------------------------------------------------------------------

    def observe(self, timing: CallTiming) -> None:
        if timing.items <= 0 or timing.duration_s <= 0:
            return
        with self._lock:
            self.calls += 1
            tokens = max(timing.completion_tokens, 1)
            if timing.ttft_s is not None and tokens > 1:
                ttft = timing.ttft_s
                per_token = (timing.duration_s - ttft) / (tokens - 1)
                self.token_s = _ewma(self.token_s, _clamp(per_token, 0.0005, 2.0))
            else:  # not streamed: what the tokens do not explain is the first-token time
                ttft = timing.duration_s - tokens * self.token_s
            self.ttft_s = _ewma(self.ttft_s, _clamp(ttft, 0.0, 120.0))
            # the floor falls at once and rises slowly: a baseline for "queueing"
            self.ttft_floor_s = min(self.ttft_floor_s * 1.002, self.ttft_s)
            self.tokens_per_item = _ewma(
                self.tokens_per_item, timing.completion_tokens / timing.items
            )
            if timing.request_chars > 0 and timing.prompt_tokens > 0:
                cpt = timing.request_chars / timing.prompt_tokens
                self.chars_per_token = _ewma(self.chars_per_token, _clamp(cpt, 0.5, 16.0))
            if timing.reply_tokens_o200k > 0 and timing.completion_tokens > 0:
                ratio = timing.completion_tokens / timing.reply_tokens_o200k
                self.tokenizer_ratio = _ewma(self.tokenizer_ratio, _clamp(ratio, 0.5, 4.0))

    @property
    def congested(self) -> bool:
        """The first token comes much later than it did lately: requests are queueing."""
        return self.calls >= 8 and self.ttft_s > max(2.5 * self.ttft_floor_s,
                                                     self.ttft_floor_s + 0.5)

    # -- planning ---------------------------------------------------------------------

    def item_prompt_tokens(self, item_chars: int, shared_chars: float) -> float:
        """Estimated prompt tokens of one item: its own lines and its part of the rest."""
        return (item_chars + shared_chars) / self.chars_per_token

    def item_completion_tokens(self, codes: int, items: int) -> float:
        """Estimated output tokens of one entry (number, pairs, separator) and its part of
        the reply's frame, in the endpoint's tokenizer."""
        return (2 + 2 * codes + 4 / items) * max(self.tokenizer_ratio, 0.5)

    def expected_s(self, items: int) -> float:
        """Expected duration of a call for ``items`` items."""
        return self.ttft_s + self.token_s * (4 + items * self.tokens_per_item)

    def batch_size(self, budget_s: float, largest: int) -> int:
        """The most items whose call is expected to end within ``budget_s``.

        The budget minus the first-token time is what output may take; when the first
        token alone eats the budget, a quarter of it is still given to output, so a slow
        endpoint gets smaller batches rather than one call per message.
        """
        for_output = max(budget_s - self.ttft_s, budget_s / 4)
        per_item = max(self.tokens_per_item, 0.5) * self.token_s
        size = math.floor((for_output - 4 * self.token_s) / per_item)
        return max(1, min(largest, size))

    def max_tokens(self, items: int) -> int:
        """The output cap for ``items``: the longest valid reply in this tokenizer."""
        # 1.25: a grammar lets a model put whitespace between elements
        scale = max(self.tokenizer_ratio, 1.0) * 1.25
        return math.ceil(worst_reply_tokens(items) * scale) + 16

    def timeout_s(self, max_tokens: int, ceiling: float) -> float:
        """Generous for the longest valid reply, far below a fixed worst-case time-out."""
        first = max(3 * self.ttft_s, self.ttft_s + 2.0)
        return min(ceiling, first + 1.5 * max_tokens * self.token_s)

    def first_token_timeout_s(self, ceiling: float) -> float:
        """When streaming: how long to wait for the first byte before giving up."""
        return min(ceiling, max(3 * self.ttft_s, self.ttft_s + 2.0))


def _ewma(old: float, new: float) -> float:
    return old + _ALPHA * (new - old)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
