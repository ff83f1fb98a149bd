"""One typed settings object, read from the environment (``MODERATION_*`` and OpenAI's own)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.models import Action

DEFAULT_POLICY = Path(__file__).parent / "policies" / "default.yaml"

# USD per 1M tokens: (input, cached input, output). Override with MODERATION_PRICES.
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
    llm_timeout_s: float = 10.0
    llm_max_attempts: int = 3
    llm_deadline_s: float = 30.0
    llm_max_output_tokens: int = 1200
    breaker_fail_max: int = 5
    breaker_reset_s: float = 15.0
    prices: dict[str, tuple[float, float, float]] = Field(default_factory=lambda: DEFAULT_PRICES)

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
    concurrency: int = Field(default=48, description="LLM batches in flight per process.")
    prefetch: int = 1024
    cache_size: int = 100_000
    cache_ttl_s: int = 7 * 24 * 3600

    # Queues and exchanges.
    requests_queue: str = "moderation.requests"
    verdicts_exchange: str = "moderation.verdicts"
    dead_queue: str = "moderation.dead"
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
