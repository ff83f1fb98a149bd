"""A parsed policy -> what the pipeline decides with: per tenant, a rules engine,
thresholds and a fallback.

No file and no thread here: ``compile_policy`` takes what ``worker._policy_file`` parsed,
so it can be exercised on a policy written inline, and ``worker._policy_store`` (which
watches the file) calls it for every version it loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from worker._policy_file import (
    Fallback,
    PolicyFile,
    PolicySource,
    Thresholds,
    layer_thresholds,
    read_policy,
)
from worker._policy_thresholds import Limits, compile_limits
from worker._signal_rules import SignalRules, compile_signal_rules, policy_windows
from worker.rules import RulesEngine


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    engine: RulesEngine
    thresholds: dict[str, Thresholds]
    fallback: Fallback
    language_thresholds: dict[str, dict[str, Thresholds]] = field(default_factory=dict)
    signals: SignalRules = field(default_factory=SignalRules)
    review_store: tuple[str, ...] | None = None  # None: the settings' review_actions
    limits: Limits = field(init=False)
    _language_limits: dict[str, Limits] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", compile_limits(self.thresholds))
        by_language = {k: compile_limits(v) for k, v in self.language_thresholds.items()}
        object.__setattr__(self, "_language_limits", by_language)

    def limits_for(self, language: str | None) -> Limits:
        """The thresholds for text in ``language`` (the policy's own where it has none)."""
        if language is None:
            return self.limits
        return self._language_limits.get(language, self.limits)


def compile_tenant(spec: PolicyFile, tenant: str | None) -> TenantPolicy:
    """The base layer of ``spec``, with ``tenant``'s layer on top (None: the base alone)."""
    layers = [spec] if tenant is None else [spec, spec.tenants[tenant]]
    fallback = spec.fallback or Fallback()
    if tenant is not None and spec.tenants[tenant].fallback is not None:
        fallback = spec.tenants[tenant].fallback or fallback
    languages = {code for layer in layers for code in layer.language_thresholds}
    return TenantPolicy(
        engine=RulesEngine(*layers),
        thresholds=layer_thresholds(*layers),
        fallback=fallback,
        language_thresholds={
            code: layer_thresholds(*layers, language=code) for code in sorted(languages)
        },
        signals=compile_signal_rules(*layers),
        review_store=next(
            (layer.review_store for layer in reversed(layers) if layer.review_store is not None),
            None,
        ),
    )


class Policy:
    """A compiled policy: the base layer plus tenants, each tenant compiled on first use
    (a policy may name many tenants; a worker may only ever see a few)."""

    def __init__(self, spec: PolicyFile, version: str, shadow: Policy | None = None) -> None:
        self.spec = spec
        self.version = version
        self.name = spec.name
        self.shadow = shadow
        # what the counters count, for every tenant (None: no rule needs Redis)
        self.windows = policy_windows([spec, *spec.tenants.values()])
        self.llm_context = spec.llm_context
        self._tenants: dict[str | None, TenantPolicy] = {}
        self._lock = threading.Lock()
        self.for_tenant(None)  # compile the base now so errors surface at load

    @classmethod
    def load(cls, path: Path, *, with_shadow: bool = True) -> Policy:
        """``read_policy`` then ``compile_policy``, for a caller holding a path."""
        return compile_policy(read_policy(path, with_shadow=with_shadow))

    def for_tenant(self, tenant: str | None) -> TenantPolicy:
        key = tenant if tenant in self.spec.tenants else None
        found = self._tenants.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._tenants:
                self._tenants[key] = compile_tenant(self.spec, key)
            return self._tenants[key]


def compile_policy(source: PolicySource) -> Policy:
    """The policy ``source`` holds, its shadow compiled first (as ``Policy`` does its
    base), so that an error in either surfaces here rather than inside a message."""
    shadow = compile_policy(source.shadow) if source.shadow is not None else None
    return Policy(source.spec, source.version, shadow)
