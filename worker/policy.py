"""Stage 6: scores -> action. The model never sets the action; thresholds do.

Also the entry point to the policy as a whole: ``PolicyStore`` holds the policy in
force and reloads it when its file changes; ``Policy`` is one compiled version (rules
engine, thresholds and fallback per tenant, version, shadow). The machinery is
private, one job a module: ``worker._policy_file`` (YAML -> validated models),
``worker._policy_compile`` (models -> engines, no file or thread),
``worker._policy_store`` (watching and reloading) and ``worker._policy_thresholds``
(scores -> action).
"""

from __future__ import annotations

from worker._policy_compile import Policy, TenantPolicy, compile_policy, compile_tenant
from worker._policy_file import PolicyError
from worker._policy_store import PolicyStore
from worker._policy_thresholds import (
    Limits,
    compile_limits,
    decide,
    decide_scores,
    fallback_action,
)

__all__ = [
    "Limits",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "TenantPolicy",
    "compile_limits",
    "compile_policy",
    "compile_tenant",
    "decide",
    "decide_scores",
    "fallback_action",
]
