"""One typed settings object, read from the environment (``MODERATION_*`` and OpenAI's own)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.models import Action

DEFAULT_POLICY = Path(__file__).parent / "policies" / "default.yaml"

# OpenAI's list prices, USD per 1M tokens: (input, cached input, output).
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODERATION_", extra="ignore", populate_by_name=True
    )

    broker_url: str = "amqp://guest:guest@localhost:5672//"
    redis_url: str | None = Field(default=None, description="Shared verdict cache when set.")

    # The LLM stage: the openai SDK's own variables, so any compatible server works.
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "MODERATION_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "MODERATION_OPENAI_BASE_URL"),
    )
    model: str = "gpt-4o-mini"
    llm_latency_budget_ms: float = Field(
        default=1500.0,
        description="Expected duration of one LLM call; batch size follows from it and the "
        "endpoint's observed speed.",
    )
    llm_expected_ttft_ms: float = Field(
        default=600.0, description="First guess of the time to first token (then observed)."
    )
    llm_expected_token_ms: float = Field(
        default=15.0, description="First guess of the time per output token (then observed)."
    )
    llm_stream: bool = Field(
        default=False, description="Stream replies: each item's verdict goes out as its "
        "answer arrives (lower latency for large batches, more CPU per message)."
    )
    llm_timeout_s: float = Field(
        default=30.0, description="Ceiling of one call's time-out (each call's own follows "
        "from its output cap and the observed speed)."
    )
    llm_max_attempts: int = Field(default=3, description="Tries of one request on 429/5xx.")
    llm_max_asks: int = Field(
        default=2, description="Times an item without a valid answer is asked again."
    )
    llm_deadline_s: float = Field(
        default=20.0, description="Time one LLM request may take, its retries on 429/5xx "
        "included; then its items are split or asked again, or get the fallback."
    )
    llm_max_output_tokens: int = Field(default=4096, description="Ceiling of any output cap.")
    llm_context_tokens: int | None = Field(
        default=None, description="The model's context size; learned from the endpoint's "
        "400 when unset."
    )
    breaker_fail_max: int = 5
    breaker_reset_s: float = 15.0
    prices: dict[str, tuple[float, float, float]] | None = Field(
        default=None,
        description="USD per 1M tokens (input, cached input, output) by model; unset: "
        "OpenAI's list prices, applied only when the endpoint is OpenAI's.",
    )

    policy: Path = DEFAULT_POLICY
    policy_reload_s: float = Field(default=2.0, description="How often to check the file.")
    fallback_action: Action | None = Field(
        default=None, description="Overrides the policy's fallback action (review by default)."
    )

    # Input limits: anything larger is dead-lettered before any work is done.
    max_body_bytes: int = 256 * 1024
    max_text_chars: int = 32_000
    max_metadata_bytes: int = 16 * 1024
    max_json_depth: int = 32
    token_budget: int = Field(default=1024, description="Tokens of text sent to the LLM.")

    # Throughput.
    batch_size: int = 64
    batch_wait_ms: float = 30.0
    batch_eager_below: int = Field(
        default=4,
        description="Flush a partial batch at once while fewer LLM batches are in flight "
        "(light load: no wait; costs at most this many calls per LLM latency).",
    )
    concurrency: int = Field(
        default=64, description="Most LLM calls in flight per process (the adaptive limit's "
        "ceiling)."
    )
    prefetch: int = 4096
    llm_max_pending: int = Field(
        default=3072, description="Messages per process waiting for the LLM; more go to the "
        "deferred queue, so a slow LLM never holds back what the rules decide.",
    )
    cache_size: int = 100_000
    cache_ttl_s: int = 7 * 24 * 3600

    # Queues and exchanges.
    requests_queue: str = "moderation.requests"
    verdicts_exchange: str = "moderation.verdicts"
    dead_queue: str = "moderation.dead"
    deferred_queue: str = "moderation.deferred"
    deferred_prefetch: int = 256
    delivery_limit: int = 5

    shutdown_grace_s: float = Field(
        default=25.0, description="On SIGTERM, time to finish in-flight work before exiting."
    )

    # Operations.
    metrics_port: int | None = 9808
    health_file: Path = Path("/tmp/moderation-worker.alive")
    log_level: str = "INFO"
    log_text: bool = Field(default=False, description="Log message text (user data!).")

    @property
    def llm_enabled(self) -> bool:
        return bool(self.openai_base_url or self.openai_api_key)

    def price(self, model: str | None) -> tuple[float, float, float] | None:
        """The price of ``model``'s tokens, or None when unknown (a local model costs 0)."""
        if not model:
            return None
        if self.prices is not None:
            return self.prices.get(model)
        openai_endpoint = self.openai_base_url is None or urlsplit(
            self.openai_base_url
        ).hostname in ("api.openai.com",)
        return DEFAULT_PRICES.get(model) if openai_endpoint else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
