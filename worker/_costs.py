"""What an LLM-classified verdict cost: its share of the call's tokens, in dollars."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.models import Usage

if TYPE_CHECKING:
    from worker._batch_result import ItemUsage


def cost_usd(
    price: tuple[float, float, float] | None, prompt: float, cached: float, completion: float
) -> float:
    if price is None:
        return 0.0
    fresh_in, cached_in, out = price
    return ((prompt - cached) * fresh_in + cached * cached_in + completion * out) / 1e6


class TokenShares:
    """Turns items' estimated token shares into verdict usage (integers whose running
    sum stays true to the floats, so totals over many verdicts are not rounded away)
    and cost."""

    def __init__(self, price: tuple[float, float, float] | None) -> None:
        self._price = price
        self._prompt = self._completion = 0.0  # running float totals
        self._prompt_int = self._completion_int = 0

    def take(self, share: ItemUsage, duplicates: int) -> tuple[Usage, float]:
        prompt = share.prompt_tokens / duplicates
        completion = share.completion_tokens / duplicates
        self._prompt += prompt
        self._completion += completion
        p = round(self._prompt) - self._prompt_int
        c = round(self._completion) - self._completion_int
        self._prompt_int += p
        self._completion_int += c
        usage = Usage(prompt_tokens=p, completion_tokens=c, llm_calls=share.calls / duplicates)
        return usage, cost_usd(self._price, prompt, 0.0, completion)
