"""One typed settings object, read from the environment (``MODERATION_*`` and OpenAI's own)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.models import Action

DEFAULT_POLICY = Path(__file__).parent / "policies" / "default.yaml"


def _user_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path.home() / ".cache"


# OpenAI's list prices, USD per 1M tokens: (input, cached input, output).
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
}


class ReviewLogin(BaseModel):
    """One reviewer of the review page: their secret and the tenants they review."""

    secret: SecretStr
    tenants: list[str] = Field(min_length=1)


class Settings(BaseSettings):
    """Every setting, from the environment (``MODERATION_*``, the openai SDK's own
    ``OPENAI_*``), or from the file ``<VARIABLE>_FILE`` names (``worker._settings_files``)."""

    model_config = SettingsConfigDict(
        env_prefix="MODERATION_", extra="ignore", populate_by_name=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from worker._settings_files import FileVariables

        return (init_settings, env_settings, FileVariables(settings_cls), dotenv_settings)

    broker_url: str = Field(
        default="amqp://guest:guest@localhost:5672//",
        description="RabbitMQ connection URL, of the worker and of the client.",
    )
    broker_password: SecretStr | None = Field(
        default=None,
        description="Password put into every broker URL (for a password mounted as a file: "
        "`MODERATION_BROKER_PASSWORD_FILE`), so the URL itself holds none.",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) that `amqps://` and `rediss://` servers are "
        "verified against; unset: the system's. Certificates are always verified.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS to the broker and Redis."
    )
    tls_key_file: Path | None = Field(
        default=None, description="Private key (PEM) of `MODERATION_TLS_CERT_FILE`."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL of a score cache shared across pods; unset: each process "
        "caches on its own.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the review store (`python -m worker db upgrade` "
        "creates it); unset: no review store, no decisions consumer, no overrides.",
    )
    review_actions: list[Literal["review", "flag", "block"]] = Field(
        default=["review"],
        description="Verdict actions recorded in the review store (a tenant's policy may "
        "say otherwise with `review_store:`).",
    )
    reviews_queue: str = Field(
        default="moderation.reviews",
        description="Queue the worker puts review items on (text and verdict) for the store.",
    )
    decisions_queue: str = Field(
        default="moderation.decisions", description="Queue reviewers' decisions arrive on."
    )
    review_logins: dict[str, ReviewLogin] = Field(
        default_factory=dict,
        description='JSON `{"reviewer": {"secret": "...", "tenants": ["acme"]}}`: who may '
        "log in to the review page and whose items they see and decide (`_` is the base "
        "policy's, requests without a tenant). Secrets may come from a file "
        "(`MODERATION_REVIEW_LOGINS_FILE`).",
    )
    review_session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the review page's session cookies; unset: a random one per "
        "process (logins do not survive a restart, or reach another replica).",
    )
    review_store_in_worker: bool = Field(
        default=True,
        description="Whether each worker also writes the review store (consumes "
        "moderation.reviews and moderation.decisions); false: run `python -m worker "
        "review-store` processes for that, and the workers only read overrides.",
    )
    overrides_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="How often each worker reads new overrides (human decisions) from the store.",
    )

    # The LLM stage: the openai SDK's own variables, so any compatible server works.
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "MODERATION_OPENAI_API_KEY"),
        description="API key of the LLM endpoint (the openai SDK's own variable); this or "
        "the base URL turns the LLM stage on.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "MODERATION_OPENAI_BASE_URL"),
        description="URL of any OpenAI-compatible endpoint (unset: OpenAI's); this or the "
        "key turns the LLM stage on.",
    )
    llm_server: Literal["auto", "openai", "vllm", "ollama", "llamacpp"] = Field(
        default="auto",
        description="Kind of server behind the endpoint: `auto` asks it once at start "
        "(OpenAI's own API is not asked). llama.cpp gets at most its slots in calls at "
        "once, Ollama at most 4.",
    )
    model: str = Field(
        default="gpt-4o-mini",
        description="Model name sent to the endpoint; part of the cache key, and what "
        "prices the tokens.",
    )
    llm_latency_budget_ms: float = Field(
        default=1500.0,
        description="Expected duration of one LLM call; the batch size follows from it and "
        "the endpoint's observed first-token and per-token times.",
    )
    llm_expected_ttft_ms: float = Field(
        default=600.0,
        description="First guess of the time to first token (gpt-4o-mini's), replaced by "
        "what is observed.",
    )
    llm_expected_token_ms: float = Field(
        default=15.0,
        description="First guess of the time per output token (gpt-4o-mini's), replaced by "
        "what is observed.",
    )
    llm_stream: bool = Field(
        default=False,
        description="Stream replies: each verdict goes out as its answer arrives (lower "
        "latency for big batches, about twice the worker CPU per message).",
    )
    llm_timeout_s: float = Field(
        default=30.0,
        description="Ceiling of one call's time-out (each call's own follows from its output "
        "cap and the observed speed).",
    )
    llm_max_attempts: int = Field(
        default=3, description="Tries of one LLM request on 429/5xx, the first included."
    )
    llm_max_asks: int = Field(
        default=2, description="Times an item without a valid answer is asked again."
    )
    llm_deadline_s: float = Field(
        default=20.0,
        description="Time one LLM request may take, its retries on 429/5xx included; then "
        "its items are split or asked again, or get the fallback.",
    )
    llm_max_output_tokens: int = Field(
        default=4096, description="Ceiling of any call's output-token cap."
    )
    llm_context_tokens: int | None = Field(
        default=None,
        description="The model's context size in tokens; learned from the endpoint's 400 "
        "when unset.",
    )
    breaker_fail_max: int = Field(
        default=5,
        description="Consecutive failed LLM calls that open the circuit breaker (then items "
        "get the fallback without a call).",
    )
    breaker_reset_s: float = Field(
        default=15.0,
        description="Seconds an open circuit breaker waits before it lets a trial call through.",
    )
    llm_rpm: float | None = Field(
        default=None,
        description="Requests per minute the LLM account allows (OpenAI's RPM): calls wait "
        "for it instead of meeting 429s; unset: learnt from the endpoint's "
        "`x-ratelimit-*` headers. Shared by all pods through `MODERATION_REDIS_URL`.",
    )
    llm_tpm: float | None = Field(
        default=None,
        description="Tokens per minute the account allows (TPM; a call counts its prompt "
        "and the completion it asks for); unset: learnt from the headers.",
    )
    llm_budget_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of RPM/TPM one process uses when the shared budget in Redis is "
        "unreachable (e.g. 0.25 for 4 worker processes in all).",
    )
    prices: dict[str, tuple[float, float, float]] | None = Field(
        default=None,
        description='JSON `{"model": [input, cached_input, output]}`, USD per 1M tokens; '
        "unset: OpenAI's list prices, applied only when the endpoint is OpenAI's (a local "
        "model costs nothing).",
    )

    policy: Path = Field(
        default=DEFAULT_POLICY,
        description="Rules and thresholds file; reloaded when it changes.",
    )
    policy_reload_s: float = Field(
        default=2.0, description="How often to check the policy file for a change, in seconds."
    )
    language_detection: bool = Field(
        default=True,
        description="Detect each text's language (fastText's compact model, bundled) for "
        "per-language rules and thresholds and the verdict's `language`; off: only a "
        "request's own `language` counts.",
    )
    fallback_action: Action | None = Field(
        default=None,
        description="Action when the LLM cannot answer; unset: the policy's (`review` in "
        "the default policy).",
    )

    # Input limits: anything larger is dead-lettered before any work is done.
    max_body_bytes: int = Field(
        default=256 * 1024,
        description="Largest message body (256 KiB); a larger request is dead-lettered.",
    )
    max_text_chars: int = Field(
        default=32_000,
        description="Longest `text` in characters; a longer request is dead-lettered.",
    )
    max_metadata_bytes: int = Field(
        default=16 * 1024,
        description="Largest `metadata` as UTF-8 JSON (16 KiB); a larger request is dead-lettered.",
    )
    max_json_depth: int = Field(
        default=32,
        description="Deepest nesting of `metadata`; a deeper request is dead-lettered.",
    )
    token_budget: int = Field(
        default=1024,
        description="Tokens of text sent to the LLM (head and tail kept, the middle cut).",
    )
    context_token_budget: int = Field(
        default=256,
        ge=0,
        description="Tokens of context (the request's context and previous messages) sent "
        "with an item, cut like the text.",
    )

    # Throughput.
    batch_size: int = Field(
        default=64,
        description="Largest LLM batch (used when messages wait anyway); below it the "
        "latency budget sets the size.",
    )
    batch_wait_ms: float = Field(
        default=30.0, description="Longest wait to fill a partial LLM batch."
    )
    batch_eager_below: int = Field(
        default=4,
        description="Start a partial batch at once while fewer LLM batches run (light load "
        "waits for nothing; costs at most this many calls per LLM latency).",
    )
    concurrency: int = Field(
        default=64,
        description="Most LLM calls in flight per process; the adaptive limit works below it.",
    )
    prefetch: int = Field(default=4096, description="Unacknowledged requests per worker process.")
    llm_max_pending: int = Field(
        default=3072,
        description="Most messages per process waiting for the LLM (fewer while the call "
        "limit is cut: its calls' worth at full batches, and one batch more); more go to "
        "the deferred queue, so rules verdicts never wait behind the LLM.",
    )
    cache_size: int = Field(
        default=100_000, description="Scores kept in each process's in-memory LRU cache."
    )
    cache_ttl_s: int = Field(
        default=7 * 24 * 3600,
        description="Lifetime of a score in the shared Redis cache, in seconds (7 days).",
    )

    # Queues and exchanges.
    requests_queue: str = Field(
        default="moderation.requests",
        description="Quorum queue the worker consumes requests from and the client publishes to.",
    )
    verdicts_exchange: str = Field(
        default="moderation.verdicts",
        description="Topic exchange verdicts are published to; unrouted ones land in "
        "`moderation.verdicts.unrouted`.",
    )
    dead_queue: str = Field(
        default="moderation.dead",
        description="Queue of dead-lettered requests (invalid, too large, or past the "
        "delivery limit).",
    )
    deferred_queue: str = Field(
        default="moderation.deferred",
        description="Queue of requests waiting for the LLM while its stage is full; "
        "consumed at the LLM's pace.",
    )
    tenant_users: dict[str, list[str]] | None = Field(
        default=None,
        description='JSON `{"broker user": ["tenant", ...]}`: the tenant comes from the '
        "`user_id` property RabbitMQ validated, not from what the producer wrote. A request "
        "naming a tenant its user may not use, or without `user_id`, is dead-lettered "
        '(`tenant_not_allowed`); one naming none gets the user\'s first tenant; `"*"` allows '
        "any. Verdict routing keys then start with the tenant. Unset: the request's "
        "`tenant` is trusted.",
    )
    deferred_prefetch: int = Field(
        default=256, description="Deferred requests taken back per process at a time."
    )
    delivery_limit: int = Field(
        default=5, description="Deliveries before RabbitMQ dead-letters a poison message."
    )

    shutdown_grace_s: float = Field(
        default=25.0, description="On SIGTERM, time to finish in-flight work before exiting."
    )

    # Operations.
    metrics_port: int | None = Field(
        default=9808, description="Port of the Prometheus `/metrics` endpoint; 0 turns it off."
    )
    metrics_address: str = Field(
        default="0.0.0.0",
        description="Address `/metrics` listens on (`127.0.0.1`: this host only).",
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend (e.g. `redis://localhost:6379/1`): the "
        "`moderation.moderate` task's result is then the verdict; unset: no results kept.",
    )
    task_concurrency: int = Field(
        default=64,
        description="`moderation.moderate` tasks waiting for their verdicts at once per "
        "process (Celery's thread pool); the batched pipeline does the work.",
    )

    cache_dir: Path | None = Field(
        default_factory=lambda: _user_cache() / "moderation-worker",
        description="Compiled rule databases and character tables, kept between starts "
        "(`$XDG_CACHE_HOME/moderation-worker`, else `~/.cache/moderation-worker`); empty: "
        "off, everything is rebuilt at each start.",
    )
    health_file: Path = Field(
        default=Path("/tmp/moderation-worker.alive"),
        description="Touched every 5 s; `python -m worker health` checks it.",
    )
    log_level: str = Field(
        default="INFO",
        description="Level of the JSON logs (structlog); `DEBUG` adds a line per verdict.",
    )

    @model_validator(mode="after")
    def _password_into_urls(self) -> Settings:
        if self.broker_password is not None:
            password = self.broker_password.get_secret_value()
            self.broker_url = ";".join(
                with_password(url, password) for url in self.broker_url.split(";") if url
            )
        return self

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if value in ("", None) else value

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


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its password (percent-encoded), its user kept."""
    parts = urlsplit(url.strip())
    user = parts.username or "guest"
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{quote(unquote(user), safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_of_app(app: Any) -> Settings:
    """The settings a Celery app was built with (``worker.celery_app.install`` keeps them
    in ``app.conf.moderation_settings``), else those of the environment."""
    settings = app.conf.get("moderation_settings")
    return settings if isinstance(settings, Settings) else get_settings()
