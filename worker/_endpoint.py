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
from collections import deque
from dataclasses import dataclass

from worker._prompt import worst_reply_tokens

_ALPHA = 0.15  # weight of a new observation in the moving estimates
_CALLS_TO_TRUST = 3  # answered calls before time-outs follow the estimates
_FLOOR_CALLS = 100  # calls whose first-token times say what an unqueued call takes


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


class _Line:
    """The slope of an exponentially weighted least-squares line y = a + b x (b >= 0),
    for the first token's time against the batch size: prefill grows with the items,
    queueing and network do not. Until the sizes have varied, it is ``slope`` as given."""

    def __init__(self, slope: float = 0.0, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.slope = slope
        self._moments: list[float] | None = None  # E[x], E[y], E[xx], E[xy]
        self.fitted = False  # the sizes have varied enough for ``slope`` to be measured

    @property
    def mean_x(self) -> float:
        """The recent batch size, weighted as the line's points are."""
        return self._moments[0] if self._moments is not None else 0.0

    def add(self, x: float, y: float) -> None:
        point = [x, y, x * x, x * y]
        if self._moments is None:
            self._moments = point
            return
        self._moments = [
            m + self.alpha * (p - m) for m, p in zip(self._moments, point, strict=True)
        ]
        mx, my, mxx, mxy = self._moments
        variance = mxx - mx * mx
        if variance > 0.25:  # the sizes differ enough to tell a slope from noise
            self.slope = max(0.0, (mxy - mx * my) / variance)
            self.fitted = True


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
        self._fixed_s = 0.0
        self._recent_fixed: deque[float] = deque(maxlen=_FLOOR_CALLS)
        self._prefill = _Line()  # first-token time against items per call
        self._slow_item_s = 0.0  # per-item time a timed-out batch implies (decays)
        self.calls = 0

    # -- learning ---------------------------------------------------------------------

    def observe(self, timing: CallTiming) -> None:
        if timing.items <= 0 or timing.duration_s <= 0:
            return
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            tokens = max(timing.completion_tokens, 1)
            if timing.ttft_s is not None and tokens > 1:
                ttft = timing.ttft_s
                per_token = (timing.duration_s - ttft) / (tokens - 1)
                per_token = _clamp(per_token, 0.0005, 2.0)
                self.token_s = per_token if first else _ewma(self.token_s, per_token)
            else:  # not streamed: what the tokens do not explain is the first-token time
                ttft = timing.duration_s - tokens * self.token_s
            ttft = _clamp(ttft, 0.0, 120.0)
            # the first answer replaces the guesses (gpt-4o-mini's): averaged in, a
            # guess 3x too fast would still size the batches after the first calls
            self.ttft_s = ttft if first else _ewma(self.ttft_s, ttft)
            usual_size = timing.items <= 2 * self._prefill.mean_x + 2
            self._prefill.add(timing.items, ttft)
            # what does not grow with the items (network, queueing), smoothed, and the
            # low end of its recent values: calls that found no queue. Only from calls of
            # about the usual size (for a batch far larger than the line has seen, its
            # slope is an extrapolation) and whose prefill, as the line has it, is at
            # most half their first token: where it is most of it, the line's error is
            # most of what is left.
            prefill = self._prefill.slope * timing.items
            fixed = max(0.0, ttft - prefill)
            if self.calls == 1 or (usual_size and prefill <= ttft / 2):
                self._fixed_s = fixed if self.calls == 1 else _ewma(self._fixed_s, fixed)
                self._recent_fixed.append(fixed)
            self._slow_item_s *= 0.98
            self.tokens_per_item = _ewma(
                self.tokens_per_item, timing.completion_tokens / timing.items
            )
            if timing.request_chars > 0 and timing.prompt_tokens > 0:
                cpt = timing.request_chars / timing.prompt_tokens
                self.chars_per_token = _ewma(self.chars_per_token, _clamp(cpt, 0.5, 16.0))
            if timing.reply_tokens_o200k > 0 and timing.completion_tokens > 0:
                ratio = timing.completion_tokens / timing.reply_tokens_o200k
                self.tokenizer_ratio = _ewma(self.tokenizer_ratio, _clamp(ratio, 0.5, 4.0))

    def timed_out(self, after_s: float, items: int) -> None:
        """A call of ``items`` got no answer in ``after_s``: the endpoint is at least that
        slow, so the next time-outs (fitted to the estimate) grow, as a TCP retransmit
        timer's, and batches shrink as if each item had cost its share of the wait."""
        with self._lock:
            self.ttft_s = max(self.ttft_s, after_s)
            self._slow_item_s = max(self._slow_item_s, after_s / max(items, 1))

    @property
    def ttft_floor_s(self) -> float:
        """The fastest of the last calls' first tokens, beyond their prefill: what a call
        that finds no queue takes. Over a window, not a running minimum, which kept an
        estimate that came out near zero for good: every later call looked queued, and
        the limit was cut call after call down to one."""
        return min(self._recent_fixed, default=math.inf)

    @property
    def congested(self) -> bool:
        """The first token comes much later than for the fast calls lately, beyond what
        a batch's own prefill explains: requests are queueing at the server.

        A request queued at a server with slots waits for a whole call ahead of it: the
        floor (that call's first token) plus its items' prefill and output. So the test
        is the floor, plus such a call at the usual batch size, plus 0.25 s for a first
        token's own spread (~2x at gpt-4o-mini's p99 against its fastest). What a busy
        client adds (threads late to send and to read: ~0.3 s on this project's 2-core
        benchmark box in a closed loop) stays below it, so the limit is not cut for it.
        Only unqueued numbers go into the call, or queueing would raise its own bar.
        """
        if len(self._recent_fixed) < 8:
            return False
        floor = self.ttft_floor_s
        items = max(1, round(self._prefill.mean_x))
        unqueued_call = floor + self.token_s * 4 + items * self._per_item_s()
        return self._fixed_s > floor + unqueued_call + 0.25

    def _per_item_s(self) -> float:
        """What one more item adds to a call: its prefill and its output tokens."""
        return self._prefill.slope + max(self.tokens_per_item, 0.5) * self.token_s

    def congestion_numbers(self) -> dict[str, float]:
        """What ``congested`` compares, in ms, for the log line of a cut."""
        return {
            "fixed_ms": round(self._fixed_s * 1000, 1),
            "floor_ms": round(min(self._recent_fixed, default=0.0) * 1000, 1),
            "ttft_ms": round(self.ttft_s * 1000, 1),
            "prefill_ms_per_item": round(self._prefill.slope * 1000, 2),
        }

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

        A call is its first-token time (as observed, at the batches it had) and a part
        per item: its output tokens, and its prefill where the first token is seen to
        come later for larger batches. What the budget leaves after the first token is
        divided by the per-item part; when the first token alone eats the budget, a
        quarter of it is still given to items, so a slow endpoint gets small batches
        rather than none.
        """
        per_item = max(self._per_item_s(), self._slow_item_s)
        for_items = max(budget_s - self.ttft_s - 4 * self.token_s, budget_s / 4)
        return max(1, min(largest, math.floor(for_items / per_item)))

    def call_s(self, items: int) -> float:
        """A cautious forecast of a call of ``items``, for calls far larger than those
        seen (a backlog's full batches). Until the sizes have varied, the whole first
        token is taken to grow with the items, as a CPU server's prefill does: a
        guess that a batch of 46 costs what one of 1 did timed out against llama-server."""
        seen = max(self._prefill.mean_x, 1.0)
        if self._prefill.fitted:
            first = max(self.ttft_s, self.ttft_s + self._prefill.slope * (items - seen))
        else:  # twice the sizes seen is allowed for: sizes then vary, and the slope shows
            first = self.ttft_s * max(1.0, items / (2 * seen))
        return first + self.token_s * (4 + items * max(self.tokens_per_item, 0.5))

    def most_items_within(self, seconds: float, largest: int) -> int:
        """The largest batch (at most ``largest``, at least 1) whose ``call_s`` is within
        ``seconds``."""
        low, high = 1, max(largest, 1)
        while low < high:
            mid = (low + high + 1) // 2
            if self.call_s(mid) <= seconds:
                low = mid
            else:
                high = mid - 1
        return low

    def max_tokens(self, items: int) -> int:
        """The output cap for ``items``: the longest valid reply in this tokenizer."""
        # 1.25: a grammar lets a model put whitespace between elements
        scale = max(self.tokenizer_ratio, 1.0) * 1.25
        return math.ceil(worst_reply_tokens(items) * scale) + 16

    @property
    def known(self) -> bool:
        """Enough calls answered for the estimates to mean something."""
        return self.calls >= _CALLS_TO_TRUST

    def timeout_s(self, max_tokens: int, ceiling: float) -> float:
        """Generous for the longest valid reply, far below a fixed worst-case time-out;
        the ceiling until a few calls have shown the endpoint's speed."""
        if not self.known:
            return ceiling
        first = max(3 * self.ttft_s, self.ttft_s + 2.0)
        return min(ceiling, first + 1.5 * max_tokens * self.token_s)

    def first_token_timeout_s(self, ceiling: float) -> float:
        """When streaming: how long to wait for the first byte before giving up."""
        if not self.known:
            return ceiling
        return min(ceiling, max(3 * self.ttft_s, self.ttft_s + 2.0))


def _ewma(old: float, new: float) -> float:
    return old + _ALPHA * (new - old)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
