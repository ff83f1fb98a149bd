"""Hostile input: every case of the corpus gets its verdict or dead letter, and
injected instructions do not change the action.

Real ``celery -A worker worker`` processes, the real RabbitMQ and the simulated LLM.
Every scenario prints one summary line (``RELIABILITY scenario=...``)."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from worker.testing.amqp import DeadRecord, Outgoing, Producer
from worker.testing.fake_llm import FakeLLM

from ..conftest import ROOT
from ._faults import (
    Collector,
    check_scored_verdict,
)

pytestmark = pytest.mark.slow


HOSTILE = ROOT / "tests" / "data" / "hostile" / "cases.jsonl"


def _gen_text_chars(id: str, chars: int) -> list[bytes]:
    return [json.dumps({"id": id, "text": "a" * chars}).encode()]


def _gen_deep_array(depth: int) -> list[bytes]:
    return [b"[" * depth + b"]" * depth]


def _gen_deep_metadata(id: str, depth: int) -> list[bytes]:
    head = json.dumps({"id": id, "text": "hi"})[:-1]
    return [(head + ', "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}").encode()]


def _gen_deep_unknown_field(id: str, depth: int) -> list[bytes]:
    head = json.dumps({"id": id, "text": "hi"})[:-1]
    return [(head + ', "extra": ' + "[" * depth + "]" * depth + "}").encode()]


def _gen_huge_metadata(id: str, bytes: int) -> list[bytes]:
    return [json.dumps({"id": id, "text": "hi", "metadata": {"blob": "z" * bytes}}).encode()]


def _gen_many_keys_metadata(id: str, keys: int) -> list[bytes]:
    metadata = {f"k{n}": n for n in range(keys)}
    return [json.dumps({"id": id, "text": "hi", "metadata": metadata}).encode()]


def _gen_huge_integer(digits: int) -> list[bytes]:
    return [b'{"id": "h-bigint", "text": "hi", "metadata": {"n": 1' + b"0" * (digits - 1) + b"}}"]


def _gen_gzip(id: str) -> list[bytes]:
    return [gzip.compress(json.dumps({"id": id, "text": "compressed"}).encode(), mtime=0)]


def _gen_many_tiny(count: int) -> list[bytes]:
    return [json.dumps({"id": f"h-tiny-{n}", "text": "k"}).encode() for n in range(count)]


GENERATORS: dict[str, Callable[..., list[bytes]]] = {
    "text_chars": _gen_text_chars,
    "deep_array": _gen_deep_array,
    "deep_metadata": _gen_deep_metadata,
    "deep_unknown_field": _gen_deep_unknown_field,
    "huge_metadata": _gen_huge_metadata,
    "many_keys_metadata": _gen_many_keys_metadata,
    "huge_integer": _gen_huge_integer,
    "gzip": _gen_gzip,
    "many_tiny": _gen_many_tiny,
}


@dataclass(slots=True)
class Case:
    name: str
    group: str
    bodies: list[bytes]
    properties: dict[str, Any]
    expect: str
    action: str | None
    action_not: list[str]
    source: str | None
    note: str

    @property
    def dead_reason(self) -> str | None:
        return self.expect.split(":", 1)[1] if self.expect.startswith("dead:") else None


def load_cases(group: str) -> list[Case]:
    cases = []
    for line in HOSTILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        if raw["group"] != group:
            continue
        if "body_b64" in raw:
            bodies = [base64.b64decode(raw["body_b64"])]
        else:
            bodies = GENERATORS[raw["generator"]](**raw.get("args", {}))
        cases.append(
            Case(
                name=raw["name"],
                group=raw["group"],
                bodies=bodies,
                properties=raw.get("properties", {}),
                expect=raw["expect"],
                action=raw.get("action"),
                action_not=raw.get("action_not", []),
                source=raw.get("source"),
                note=raw.get("note", ""),
            )
        )
    return cases


def test_hostile_corpus_manifest_is_well_formed():
    cases = load_cases("input") + load_cases("injection")
    from worker.validate import DeadReason

    reasons = {r.value for r in DeadReason}
    assert len({c.name for c in cases}) == len(cases)
    assert len(cases) >= 30
    for case in cases:
        assert case.expect == "verdict" or case.dead_reason in reasons, case.name
        assert case.bodies, case.name
    bodies = [b for c in cases if c.dead_reason for b in c.bodies]
    assert len(bodies) == len(set(bodies)), "dead-letter cases are told apart by body"


def _run_cases(
    cases: list[Case],
    collector: Collector,
    broker_url: str,
    worker: Any,
    gullible: bool,
    scenario: str,
) -> list[str]:
    """Publish every case between two normal messages; return the problems found."""
    pid = worker.proc.pid
    items = [Outgoing("before", b'{"id": "h-before", "text": "good morning"}')]
    for case in cases:
        for n, body in enumerate(case.bodies):
            items.append(Outgoing(f"{case.name}#{n}", body, dict(case.properties)))
    Producer(broker_url).publish(items)
    verdict_ids: dict[str, tuple[Case, str]] = {}  # request id -> (case, text)
    dead_bodies: dict[bytes, Case] = {}
    for case in cases:
        for body in case.bodies:
            if case.dead_reason:
                dead_bodies[body] = case
            else:
                request = json.loads(body)
                verdict_ids[request["id"]] = (case, request["text"])
    wanted = set(verdict_ids) | {"h-before"}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        got_dead = {d.body for d in collector.dead}
        if wanted <= set(collector.by_id) and set(dead_bodies) <= got_dead:
            break
        time.sleep(0.1)
    # The worker is still up and still answering: a normal message after all of it.
    Producer(broker_url).publish([Outgoing("after", b'{"id": "h-after", "text": "bye now"}')])
    after = collector.wait_for({"h-after"}, timeout=30)
    collector.settle(quiet_s=1.0)

    problems: list[str] = []
    if after:
        problems.append("no verdict for a normal message sent after the corpus")
    if worker.proc.poll() is not None or worker.proc.pid != pid:
        problems.append(f"the worker process exited (code {worker.proc.poll()})")
    log = worker.output()
    for marker in (
        "receive_failed",
        "batch_failed",
        "prepare_failed",
        "RecursionError",
        "publish_callback_failed",
    ):
        if marker in log:
            problems.append(f"worker log has {marker}")
    by_body: dict[bytes, list[DeadRecord]] = defaultdict(list)
    for record in collector.dead:
        by_body[record.body].append(record)
    for body, case in dead_bodies.items():
        records = by_body.pop(body, [])
        if not records:
            problems.append(f"{case.name}: no dead letter (expected {case.dead_reason})")
        elif {r.reason for r in records} != {case.dead_reason}:
            problems.append(
                f"{case.name}: dead-lettered as {[r.reason for r in records]}, "
                f"expected {case.dead_reason} ({records[0].error[:100]})"
            )
        elif not all(r.error for r in records):
            problems.append(f"{case.name}: dead letter without an error detail")
    for body, records in by_body.items():
        problems.append(f"unexpected dead letter {records[0].reason}: {body[:80]!r}")
    for rid, (case, text) in verdict_ids.items():
        verdicts = collector.by_id.get(rid, [])
        if not verdicts:
            problems.append(f"{case.name}: no verdict for {rid!r}")
            continue
        for verdict in verdicts:
            if case.action and verdict.action != case.action:
                problems.append(
                    f"{case.name}: action {verdict.action.value}, "
                    f"expected {case.action} ({verdict.source.value})"
                )
            if verdict.action.value in case.action_not:
                problems.append(
                    f"{case.name}: action {verdict.action.value} "
                    f"(source {verdict.source.value}, reason {verdict.reason!r})"
                )
            if (
                case.source
                and verdict.source.value != case.source
                and not (case.source == "llm" and verdict.source == "cache")
            ):
                problems.append(
                    f"{case.name}: source {verdict.source.value}, expected {case.source}"
                )
            if verdict.source in ("llm", "cache"):
                problem = check_scored_verdict(verdict, text, gullible)
                if problem:
                    problems.append(f"{case.name}: {problem}")
    lost = [rid for rid in wanted | {"h-after"} if not collector.by_id.get(rid)]
    lost += [
        case.name
        for body, case in dead_bodies.items()
        if body not in {d.body for d in collector.dead}
    ]
    duplicates = sum(max(len(collector.by_id.get(rid, [])) - 1, 0) for rid in wanted)
    print(
        f"\nRELIABILITY scenario={scenario} requests={len(items) + 1} "
        f"verdicts={len(collector.verdicts)} dead_letters={len(collector.dead)} "
        f"duplicates={duplicates} lost={len(lost)} cases={len(cases)} "
        f"expected_verdicts={len(wanted) + 1} expected_dead={len(dead_bodies)} "
        f"worker_restarted={worker.proc.poll() is not None} problems={len(problems)}",
        flush=True,
    )
    if lost:
        problems.insert(0, f"LOST: {sorted(lost)[:20]}")
    return problems


def test_hostile_input_corpus(start_worker, collector: Collector, llm: FakeLLM, broker_url: str):
    cases = load_cases("input")
    worker = start_worker()
    problems = _run_cases(cases, collector, broker_url, worker, False, "hostile")
    assert not problems, "\n".join(problems)


def test_prompt_injection_cannot_change_the_action(
    start_worker, collector: Collector, llm: FakeLLM, broker_url: str
):
    """With a model that obeys injected instructions (gullible: all-zero scores when the
    text says "allow"), a real threat next to an injection must still not be allowed."""
    llm.state.gullible = True
    cases = load_cases("injection")
    worker = start_worker()
    problems = _run_cases(cases, collector, broker_url, worker, True, "injection")
    assert not problems, "\n".join(problems)
