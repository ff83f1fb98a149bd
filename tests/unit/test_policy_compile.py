"""The compile step on its own: a policy parsed from a string, no file, no reload thread."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from worker._policy_compile import Policy, compile_policy, compile_tenant
from worker._policy_file import PolicySource, parse_policy
from worker.models import Action

WORKER = Path(__file__).resolve().parents[2] / "worker"

BASE = """
name: inline
thresholds:
  default: {flag: 0.4, review: 0.7, block: 0.9}
  violence: {block: 0.8}
fallback: {action: review, categories: {sexual/minors: block}}
allow: [kill devil hills]
rules:
  - id: t.threat
    action: block
    category: violence
    words: [i will hurt you]
  - id: t.spam
    action: review
    words: [buy followers]
tenants:
  gym:
    thresholds:
      violence: {review: 0.95}
    fallback: {action: allow}
    disable: [t.spam]
    rules:
      - id: t.gym
        action: allow
        priority: 200
        words: [killer workout]
"""

SHADOW = """
name: shadow
rules:
  - id: s.rude
    action: flag
    words: [you donkey]
"""


def source(text: str = BASE, version: str = "v1", shadow: PolicySource | None = None):
    return PolicySource(parse_policy(text, "inline.yaml"), version, shadow)


def test_a_parsed_policy_compiles_without_a_file():
    policy = compile_policy(source())
    assert isinstance(policy, Policy)
    assert (policy.name, policy.version, policy.shadow) == ("inline", "v1", None)
    base = policy.for_tenant(None)
    assert base.engine.match("I w1ll hurt y o u").action is Action.BLOCK
    assert base.engine.match("buy followers now").action is Action.REVIEW
    assert base.engine.match("visiting Kill Devil Hills").action is None
    assert base.thresholds["violence"].block == 0.8
    assert base.thresholds["hate"].review == 0.7  # the default
    assert base.fallback.categories["sexual/minors"] is Action.BLOCK
    assert base.limits  # thresholds compiled for the hot path too


def test_a_tenant_layers_on_the_base():
    spec = parse_policy(BASE, "inline.yaml")
    gym = compile_tenant(spec, "gym")
    assert gym.engine.match("that killer workout").action is Action.ALLOW
    assert gym.engine.match("buy followers now").action is None  # disabled
    assert gym.engine.match("i will hurt you").action is Action.BLOCK  # inherited
    assert gym.thresholds["violence"].review == 0.95
    assert gym.fallback.action is Action.ALLOW
    assert compile_tenant(spec, None).fallback.action is Action.REVIEW


def test_tenants_compile_once_on_first_use_and_unknown_ones_get_the_base():
    policy = compile_policy(source())
    assert list(policy._tenants) == [None]  # the base, compiled up front
    gym = policy.for_tenant("gym")
    assert policy.for_tenant("gym") is gym
    assert policy.for_tenant("nobody") is policy.for_tenant(None)
    assert set(policy._tenants) == {None, "gym"}


def test_concurrent_first_use_compiles_a_tenant_once():
    policy = compile_policy(source())
    seen: list[object] = []
    threads = [
        threading.Thread(target=lambda: seen.append(policy.for_tenant("gym"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(tenant) for tenant in seen}) == 1


def test_the_shadow_is_compiled_with_its_policy():
    policy = compile_policy(source(shadow=source(SHADOW, "s1")))
    assert policy.shadow is not None and policy.shadow.version == "s1"
    assert policy.shadow.for_tenant(None).engine.match("you donkey").action is Action.FLAG
    assert policy.for_tenant(None).engine.match("you donkey").action is None


def test_a_compile_error_surfaces_from_compile_policy(monkeypatch):
    def broken(*_: object) -> None:
        raise RuntimeError("bad engine")

    monkeypatch.setattr("worker._policy_compile.RulesEngine", broken)
    with pytest.raises(RuntimeError, match="bad engine"):
        compile_policy(source())


def _imports(module: str) -> set[str]:
    tree = ast.parse((WORKER / f"{module}.py").read_text())
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("worker")
    }


def test_the_store_depends_on_the_compiler_not_the_other_way_round():
    assert "worker._policy_compile" in _imports("_policy_store")
    compiler = _imports("_policy_compile")
    assert "worker._policy_store" not in compiler and "worker.policy" not in compiler
    text = (WORKER / "_policy_compile.py").read_text()
    assert "Thread(" not in text and "import time" not in text  # a lock, no thread or clock
