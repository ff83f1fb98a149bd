"""Stage 6: scores -> action. The model never sets the action; thresholds do.

Also home of the loaded policy as a whole (rules engine, thresholds and fallback per
tenant, version, shadow) and of its reload when the file changes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from worker._policy_file import (
    Fallback,
    PolicyError,
    PolicyFile,
    Thresholds,
    layer_thresholds,
    load_policy_file,
)
from worker.models import CATEGORIES, Action, Category
from worker.rules import RulesEngine

log = structlog.get_logger("worker.policy")

__all__ = ["Policy", "PolicyError", "PolicyStore", "TenantPolicy", "decide", "decide_scores"]

# Per category, in CATEGORIES order: (name, lowest limit, ((limit, action), ...) most
# severe first). Compiled once per tenant: ``decide`` walked pydantic objects per message.
Limits = tuple[tuple[Category, float, tuple[tuple[float, Action], ...]], ...]


def decide(
    scores: dict[str, float], thresholds: dict[str, Thresholds]
) -> tuple[Action, dict[Category, bool]]:
    """The most severe action any category reaches; ``categories`` = reached flag or more."""
    return decide_scores([scores.get(c, 0.0) for c in CATEGORIES], compile_limits(thresholds))


def compile_limits(thresholds: dict[str, Thresholds]) -> Limits:
    out = []
    for category in CATEGORIES:
        limits = thresholds[category]
        steps = tuple(
            (limit, action)
            for action, limit in (
                (Action.BLOCK, limits.block),
                (Action.REVIEW, limits.review),
                (Action.FLAG, limits.flag),
            )
            if limit is not None
        )
        out.append((category, min((lim for lim, _ in steps), default=math.inf), steps))
    return tuple(out)


def decide_scores(scores: Sequence[float], limits: Limits) -> tuple[Action, dict[Category, bool]]:
    """``decide`` for scores in CATEGORIES order against compiled limits (the hot path)."""
    action = Action.ALLOW
    severity = 0
    flagged = dict.fromkeys(CATEGORIES, False)
    for (category, lowest, steps), score in zip(limits, scores, strict=True):
        if not score >= lowest:  # most scores, and NaN
            continue
        for limit, candidate in steps:
            if score >= limit:
                flagged[category] = True
                if candidate.severity > severity:
                    action, severity = candidate, candidate.severity
                break
    return action, flagged


def fallback_action(fallback: Fallback, suspected: Set[str] | None = None) -> Action:
    """The action when the LLM cannot answer: fail closed where the policy says so."""
    action = fallback.action
    for category, override in fallback.categories.items():
        if (suspected is None or category in suspected) and override.severity > action.severity:
            action = override
    return action


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    engine: RulesEngine
    thresholds: dict[str, Thresholds]
    fallback: Fallback
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", compile_limits(self.thresholds))


class Policy:
    """A loaded policy file: the base layer plus tenants, compiled on first use."""

    def __init__(self, spec: PolicyFile, version: str, shadow: Policy | None = None) -> None:
        self.spec = spec
        self.version = version
        self.name = spec.name
        self.shadow = shadow
        self._tenants: dict[str | None, TenantPolicy] = {}
        self._lock = threading.Lock()
        self.for_tenant(None)  # compile the base now so errors surface at load

    @classmethod
    def load(cls, path: Path, *, with_shadow: bool = True) -> Policy:
        spec, version = load_policy_file(path)
        shadow = None
        if spec.shadow and with_shadow:
            shadow_path = (path.parent / spec.shadow).resolve()
            shadow = cls.load(shadow_path, with_shadow=False)
        return cls(spec, version, shadow)

    def for_tenant(self, tenant: str | None) -> TenantPolicy:
        key = tenant if tenant in self.spec.tenants else None
        found = self._tenants.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._tenants:
                layers = [self.spec] if key is None else [self.spec, self.spec.tenants[key]]
                fallback = self.spec.fallback or Fallback()
                if key is not None and self.spec.tenants[key].fallback is not None:
                    fallback = self.spec.tenants[key].fallback or fallback
                self._tenants[key] = TenantPolicy(
                    engine=RulesEngine(*layers),
                    thresholds=layer_thresholds(*layers),
                    fallback=fallback,
                )
            return self._tenants[key]


class PolicyStore:
    """Holds the current policy and swaps in a new one when the file changes.

    A broken edit never takes a worker down: the error is logged and the last good
    policy stays in force.
    """

    def __init__(self, path: Path, check_every_s: float = 2.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._policy = Policy.load(path)
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + check_every_s
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None

    def _file_stamp(self) -> tuple[float, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0.0, -1)
        return (stat.st_mtime, stat.st_size)

    @property
    def current(self) -> Policy:
        now = time.monotonic()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + self.check_every_s
                stamp = self._file_stamp()
                if stamp != self._stamp and not (self._loader and self._loader.is_alive()):
                    # Compiling a large policy takes seconds: never on the caller's
                    # thread, which is the one consuming messages.
                    self._stamp = stamp
                    self._loader = threading.Thread(
                        target=self._reload, name="policy-reload", daemon=True
                    )
                    self._loader.start()
            finally:
                self._lock.release()
        return self._policy

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for a reload in progress (tests, and the embedded command)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def _reload(self) -> None:
        try:
            policy = Policy.load(self.path)
        except PolicyError as exc:
            log.error("policy_reload_failed", error=str(exc), kept=self._policy.version)
            return
        if policy.version != self._policy.version:
            log.info("policy_reloaded", old=self._policy.version, new=policy.version)
            self._policy = policy
