"""End-to-end benchmark of the moderation worker against the naive design (issue 3).

    python bench/run.py [--messages N] [--rate R] [--latency-ms 300] [--workers N]
                        [--skip-naive] [--json out.json]

Everything runs on this machine, on loopback: a RabbitMQ vhost of its own (deleted at the
end), the simulated LLM as a separate process, N real worker processes
(``celery -A worker worker``), a paced producer and a verdict collector (py-amqp, each
in its own process). Phases:

1. warm-up: a few hundred messages, not reported;
2. throughput: N unique messages through a closed loop (at most --in-flight unanswered,
   so producer, broker, workers and collector all run the whole phase: the sustained
   end-to-end rate), or all published at once (--in-flight 0: how fast the workers drain
   a full queue), or at --rate;
3. latency: at 50% of the measured throughput (or --latency-rate), the end-to-end
   latency minus the simulated LLM's configured latency;
4. naive: the same messages through ``bench/naive.py`` (one Celery task and one LLM
   call per message, prefork pool of 2).

Exits 1 if any message got no verdict (lost), 2 on a harness error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _proc, _profile  # noqa: E402
from bench._amqp import collect, produce, queue_depths  # noqa: E402
from bench._data import load_texts  # noqa: E402
from worker.testing.amqp import (  # noqa: E402
    WorkerLauncher,
    WorkerProcess,
    spawn,
    temporary_vhost,
    terminate,
)

SHARED = ROOT.parent / "shared"
TIKTOKEN_DIR = SHARED / "tiktoken"
RABBIT = os.environ.get("BENCH_RABBIT", "127.0.0.1:5672")
VERDICTS = "moderation.verdicts"

# Targets of issue 3 (2 cores, 300 ms simulated LLM latency).
TARGET_MSG_S = 1000.0
TARGET_SPEEDUP = 150.0
TARGET_CPU_MS = 0.5
TARGET_RSS_MB = 250.0
TARGET_PROMPT_RATIO = 1 / 3
TARGET_ADDED_P99_MS = 50.0
# Targets of issue 13 (the simulator at a real model's timing).
TARGET_COMPLETION_PER_LLM_MSG = 4.0
TARGET_COST_RATIO = 1 / 5
TARGET_LLM_P50_S, TARGET_LLM_P99_S, TARGET_RULES_P99_MS = 1.2, 2.5, 100.0
GPT_4O_MINI = (0.15, 0.075, 0.60)  # USD per 1M tokens: input, cached input, output


class HarnessError(Exception):
    pass


# -- processes we start, and their cleanup ------------------------------------------------

_started: list[subprocess.Popen[bytes]] = []
_mp_started: list[mp.process.BaseProcess] = []


_launchers: list[WorkerLauncher] = []


def _spawn(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    # its own process group: prefork children go with it
    proc = spawn(cmd, env, log, cwd, group=True)
    _started.append(proc)
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    terminate(proc, timeout, group=True)
    if proc in _started:
        _started.remove(proc)


def _cleanup() -> None:
    for p in list(_mp_started):
        if p.is_alive():
            p.kill()
            p.join(5)
    _mp_started.clear()
    for launcher in _launchers:
        launcher.stop_all(timeout=10)
    for proc in reversed(list(_started)):
        _stop(proc, timeout=10)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- RabbitMQ vhost ---------------------------------------------------------------------


@contextlib.contextmanager
def private_vhost() -> Any:
    # the shared broker may be restarting: the deletion is retried a little
    with temporary_vhost("moderation-bench", delete_attempts=5, timeout=90) as name:
        try:
            yield name
        finally:
            _cleanup()  # stop our processes before their vhost disappears under them


# -- the simulated LLM and the workers ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODERATION_", "OPENAI_"))}
    env["TIKTOKEN_CACHE_DIR"] = str(TIKTOKEN_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def fake_llm_flags(args: argparse.Namespace) -> list[str]:
    """The simulator's timing as the benchmark was told (real model timing by default)."""
    if args.llm_timing == "fixed":
        return [
            "--timing",
            "fixed",
            "--latency-ms",
            str(args.latency_ms),
            "--jitter-ms",
            str(args.jitter_ms),
        ]
    if args.llm_timing == "instant":
        return ["--timing", "instant"]
    return [
        "--timing",
        "real",
        "--ttft-ms",
        str(args.ttft_ms),
        "--ttft-sigma",
        str(args.ttft_sigma),
        "--token-ms",
        str(args.token_ms),
        "--prefill-ms-per-1k",
        str(args.prefill_ms_per_1k),
    ]


def describe_timing(args: argparse.Namespace) -> str:
    if args.llm_timing == "fixed":
        return f"fixed {args.latency_ms:g} ms +/- {args.jitter_ms:g} whatever the length"
    if args.llm_timing == "instant":
        return "instant"
    return (
        f"first token ~{args.ttft_ms:g} ms (lognormal sigma {args.ttft_sigma:g}) + "
        f"{args.prefill_ms_per_1k:g} ms per 1k prompt tokens + {args.token_ms:g} ms per "
        "output token, output cap enforced"
    )


def start_fake_llm(flags: list[str], tmp: Path, src: Path = ROOT) -> tuple[Any, str]:
    port = _free_port()
    proc = _spawn(
        [sys.executable, "-m", "worker.testing.fake_llm", "--port", str(port), *flags],
        {**_base_env(), "PYTHONPATH": str(src)},
        tmp / "fake_llm.log",
        cwd=src,
    )
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise HarnessError(f"fake LLM did not start: {(tmp / 'fake_llm.log').read_text()}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/v1"


def fake_control(base_url: str, **settings: Any) -> None:
    request = urllib.request.Request(
        base_url + "/_control",
        data=json.dumps(settings).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def fake_stats(base_url: str) -> dict[str, Any]:
    """The simulator's recorded calls since the last look (and it forgets them)."""
    with urllib.request.urlopen(base_url + "/_stats", timeout=10) as response:
        return json.loads(response.read())


def _has_stats(base_url: str) -> bool:
    """Whether the simulator can record its calls (an older tree's cannot)."""
    try:
        fake_stats(base_url)
    except OSError:  # urllib's HTTPError/URLError
        return False
    return True


def own_latency(
    records: dict[str, tuple[Any, ...]], tags: dict[str, int], calls: list[Any]
) -> dict[str, Any]:
    """The simulator's own latency per call, and each message's e2e minus its call's.

    The simulator sleeps latency +- jitter and then does its own work (tokens, JSON), so
    "added over the configured latency" counts up to +jitter that the worker did not add.
    Here each message's end-to-end latency is reduced by the latency its own LLM call
    actually had, measured inside the simulator from request to response written
    (messages the rules decided had no call: their whole latency counts as added).
    """
    own_by_tag: dict[int, float] = {}
    for own_ms, call_tags in calls:
        for tag in call_tags:
            own_by_tag[tag] = own_ms  # a re-asked item: its last call
    own = [c[0] for c in calls]
    added: list[float] = []
    matched = 0
    for vid, rec in records.items():
        if rec[0] is None:
            continue
        e2e = (rec[1] - rec[0]) * 1000
        llm = own_by_tag.get(tags.get(vid, -1))
        if llm is not None:
            matched += 1
        elif rec[2] == "llm":
            continue  # an LLM verdict whose call we did not see: leave it out
        added.append(e2e - (llm or 0.0))
    out: dict[str, Any] = {"calls": len(own), "matched": matched}
    if own:
        out["llm_own_ms"] = {
            "p50": pct(own, 0.5),
            "p95": pct(own, 0.95),
            "p99": pct(own, 0.99),
            "max": max(own),
            "mean": statistics.fmean(own),
        }
    if added:
        out["added_over_own_ms"] = {
            "p50": pct(added, 0.5),
            "p95": pct(added, 0.95),
            "p99": pct(added, 0.99),
            "max": max(added),
        }
    return out


def start_workers(
    count: int,
    broker_url: str,
    llm_url: str,
    tmp: Path,
    extra_env: dict[str, str],
    src: Path = ROOT,
) -> tuple[WorkerLauncher, list[WorkerProcess]]:
    env = _base_env()
    env.update(
        MODERATION_BROKER_URL=broker_url,
        OPENAI_BASE_URL=llm_url,
        OPENAI_API_KEY="bench-key",
        MODERATION_SHUTDOWN_GRACE_S="10",
        MODERATION_PRICES=json.dumps({"gpt-4o-mini": GPT_4O_MINI}),
        PYTHONPATH=str(src),
    )
    env.update(extra_env)
    # celery's own log level (warnings only); a process group each, as _spawn's
    launcher = WorkerLauncher(env, tmp, name="bench", loglevel=None, cwd=src, group=True)
    _launchers.append(launcher)
    try:
        return launcher, launcher.start_many(count, timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        raise HarnessError(str(exc)) from exc


def start_naive(broker_url: str, llm_url: str, tmp: Path, processes: int) -> Any:
    env = _base_env()
    env.update(BENCH_BROKER_URL=broker_url, OPENAI_BASE_URL=llm_url, OPENAI_API_KEY="bench-key")
    proc = _spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.naive",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(processes),
            "-Q",
            "bench.naive.tasks",
            "-n",
            f"naive-{uuid.uuid4().hex[:4]}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ],
        env,
        tmp / "naive.log",
    )
    deadline = time.monotonic() + 60
    while len(_proc.tree(proc.pid)) < processes + 1:  # parent + pool processes
        if proc.poll() is not None:
            raise HarnessError(f"naive worker exited: {(tmp / 'naive.log').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise HarnessError("naive worker not ready after 60 s")
        time.sleep(0.1)
    return proc


# -- data -------------------------------------------------------------------------------


@dataclass
class Feed:
    """Request texts: dataset samples in a shuffled cycle, unique by default (" #<n>")."""

    texts: list[str]
    unique: bool
    base: int = 0
    counter: int = 0

    def take(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            n = self.counter
            self.counter += 1
            text = self.texts[n % len(self.texts)]
            out.append(f"{text} #{self.base + n}" if self.unique else text)
        return out


def _redis_scripts(url: str | None) -> int:
    """EVALSHA calls the Redis at ``url`` has served (0 without one)."""
    if not url:
        return 0
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


AUTHORS = 0  # --authors: requests carry one of this many author ids (0: no author)


def request_bodies(prefix: str, texts: list[str]) -> list[bytes]:
    # metadata first: the producer swaps "t":0.0 for the send time (first occurrence)
    bodies = []
    for i, t in enumerate(texts):
        body: dict[str, Any] = {"metadata": {"t": 0.0}, "id": f"{prefix}{i}", "text": t}
        if AUTHORS:
            body["author"] = {"id": f"a{zlib.crc32(body['id'].encode()) % AUTHORS}"}
        bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return bodies


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Watch:
    """CPU of named process groups, and of the whole host, between two snapshots."""

    groups: dict[str, list[int]]  # name -> root pids (their process trees count)
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    host_before: tuple[float, float] = (0.0, 0.0)

    def _snap(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, roots in self.groups.items():
            cpu: dict[int, float] = {}
            for root in roots:
                cpu.update(_proc.tree_cpu(root))
            out[name] = cpu
        return out

    def start(self) -> None:
        self.before = self._snap()
        self.host_before = _proc.host_cpu()

    def stop(self) -> dict[str, float]:
        after = self._snap()
        busy, total = _proc.host_cpu()
        out = {}
        for name, cpu in after.items():
            out[name] = sum(v - self.before.get(name, {}).get(pid, 0.0) for pid, v in cpu.items())
        out["host_busy"] = busy - self.host_before[0]
        out["host_total"] = total - self.host_before[1]
        return out


def background_load(seconds: float = 2.0) -> float:
    """Busy cores on the host over ``seconds`` (run while the benchmark itself is idle)."""
    busy0, total0 = _proc.host_cpu()
    time.sleep(seconds)
    busy1, total1 = _proc.host_cpu()
    return (busy1 - busy0) / max(total1 - total0, 1e-9) * (os.cpu_count() or 1)


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``limit`` cores."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while limit > 0 and load > limit and time.monotonic() < deadline:
        print(f"  background load {load:.2f} cores > {limit:g}: waiting", flush=True)
        time.sleep(5)
        load = background_load()
    return load


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_phase(
    name: str,
    broker_url: str,
    bodies: list[bytes] | None,
    *,
    rate: float,
    connections: int,
    watch: Watch,
    timeout_s: float,
    send_naive: Any = None,
    naive_texts: list[str] | None = None,
    prefix: str,
    on_start: Any = None,
    llm_url: str | None = None,
    tags: dict[str, int] | None = None,
    in_flight: int = 0,
) -> dict[str, Any]:
    """Publish, collect every verdict, and measure; ``send_naive`` publishes Celery tasks.

    With ``llm_url`` and ``tags`` (message id -> the " #<n>" of its text), the simulator
    records its calls during the phase and each message's latency is also measured
    against its own call's actual latency (``own_latency``).
    """
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    collected = ctx.Queue()
    answered = ctx.RawValue("q", 0) if in_flight else None
    expected = len(bodies) if bodies is not None else len(naive_texts or [])
    collector = ctx.Process(
        target=collect,
        name=f"collect-{name}",
        args=(
            broker_url,
            VERDICTS,
            "#",
            prefix,
            expected,
            timeout_s,
            30.0,
            ready,
            collected,
            answered,
        ),
        daemon=True,
    )
    load = wait_quiet(QUIET[0], QUIET[1])
    print(f"[{name}] background load before the phase: {load:.2f} cores", flush=True)
    collector.start()
    _mp_started.append(collector)
    if not ready.wait(90):
        raise HarnessError("verdict collector not ready")
    watch.groups["collector"] = [collector.pid]
    producer_stats: dict[str, Any] = {}
    producer = None
    if llm_url and tags:
        fake_control(llm_url, record=True)
    llm_before = fake_stats(llm_url) if llm_url else {}  # also forgets recorded calls
    watch.start()
    t_start = time.monotonic()
    if bodies is not None:
        produced = ctx.Queue()
        producer = ctx.Process(
            target=produce,
            name=f"produce-{name}",
            args=(broker_url, bodies, rate, connections, 2000, timeout_s, produced),
            kwargs={"in_flight": in_flight, "answered": answered},
            daemon=True,
        )
        producer.start()
        _mp_started.append(producer)
        watch.groups["producer"] = [producer.pid]
        if on_start is not None:
            on_start()
        producer_stats = produced.get(timeout=timeout_s + 60)
    else:
        t0 = time.monotonic()
        for i, text in enumerate(naive_texts or []):
            send_naive({"id": f"{prefix}{i}", "text": text, "metadata": {"t": time.monotonic()}})
        producer_stats = {"sent": expected, "duration_s": time.monotonic() - t0}
    records, collector_stats = collected.get(timeout=timeout_s + 60)
    if on_start is not None and getattr(on_start, "thread", None) is not None:
        on_start.thread.join(120)
    cpu = watch.stop()
    t_end = time.monotonic()
    for p in (collector, producer):
        if p is not None:
            p.join(10)
            if p in _mp_started:
                _mp_started.remove(p)
    watch.groups.pop("collector", None)
    watch.groups.pop("producer", None)
    out = summarise(name, expected, records, collector_stats, producer_stats, cpu, t_end - t_start)
    if llm_url:
        llm_after = fake_stats(llm_url)
        out["llm_server"] = llm_server_usage(llm_before, llm_after, out)
        if tags:
            out["llm_own"] = own_latency(records, tags, llm_after["calls"])
            fake_control(llm_url, record=False)
    out["background_load_before"] = load
    if DUMP_DIR is not None:
        DUMP_DIR.mkdir(parents=True, exist_ok=True)
        with (DUMP_DIR / f"{prefix.rstrip('-')}.jsonl").open("w") as f:
            for vid, rec in records.items():
                f.write(json.dumps([vid, *rec]) + "\n")
    return out


def llm_server_usage(
    before: dict[str, Any], after: dict[str, Any], phase: dict[str, Any]
) -> dict[str, Any]:
    """What the simulated LLM counted during the phase (every HTTP request, re-asks and
    failures included), per LLM-classified message and priced as gpt-4o-mini."""
    out = {
        k: after.get(k, 0) - before.get(k, 0)
        for k in ("requests", "prompt_tokens", "completion_tokens")
    }
    classified = phase.get("llm_classified", 0)
    received = phase.get("received", 0)
    cost = (out["prompt_tokens"] * GPT_4O_MINI[0] + out["completion_tokens"] * GPT_4O_MINI[2]) / 1e6
    out["cost_per_1k_usd"] = 1000 * cost / received if received else None
    if classified:
        out["prompt_tokens_per_llm_msg"] = out["prompt_tokens"] / classified
        out["completion_tokens_per_llm_msg"] = out["completion_tokens"] / classified
        out["requests_per_llm_msg"] = out["requests"] / classified
    return out


DUMP_DIR: Path | None = None
QUIET: tuple[float, float] = (0.0, 0.0)  # (max background cores, max wait s)


def summarise(
    name: str,
    expected: int,
    records: dict[str, tuple[Any, ...]],
    collector_stats: dict,
    producer_stats: dict,
    cpu: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    got = len(records)
    recs = list(records.values())
    received = sorted(r[1] for r in recs)
    sent = sorted(r[0] for r in recs if r[0] is not None)
    latency = [(r[1] - r[0]) * 1000 for r in recs if r[0] is not None]
    out: dict[str, Any] = {
        "phase": name,
        "expected": expected,
        "received": got,
        "lost": expected - got,
        **{f"collector_{k}": v for k, v in collector_stats.items()},
    }
    if got >= 2:
        window = received[-1] - received[0]
        out["msg_s_first_to_last"] = (got - 1) / window if window > 0 else float("nan")
        lo, hi = int(got * 0.10), max(int(got * 0.99) - 1, int(got * 0.10) + 1)
        steady = received[hi] - received[lo]
        out["msg_s_steady"] = (hi - lo) / steady if steady > 0 else float("nan")
        out["window_s"] = window
        if len(sent) >= 2 and sent[-1] > sent[0]:
            out["publish_msg_s"] = (len(sent) - 1) / (sent[-1] - sent[0])
        out["publish_s"] = producer_stats.get("duration_s")
    out["producer"] = {k: v for k, v in producer_stats.items() if k != "first_send"}
    if latency:
        out["e2e_ms"] = {
            "p50": pct(latency, 0.5),
            "p95": pct(latency, 0.95),
            "p99": pct(latency, 0.99),
            "max": max(latency),
            "mean": statistics.fmean(latency),
        }
        worker_ms = [r[7] for r in recs if r[7] is not None]
        if worker_ms:
            out["worker_latency_ms"] = {"p50": pct(worker_ms, 0.5), "p99": pct(worker_ms, 0.99)}
            outside = [
                (r[1] - r[0]) * 1000 - r[7] for r in recs if r[0] is not None and r[7] is not None
            ]
            out["outside_worker_ms"] = {"p50": pct(outside, 0.5), "p99": pct(outside, 0.99)}
    sources: dict[str, int] = {}
    by_source: dict[str, list[float]] = {}
    for r in recs:
        sources[r[2]] = sources.get(r[2], 0) + 1
        if r[0] is not None:
            by_source.setdefault(r[2], []).append((r[1] - r[0]) * 1000)
    out["share"] = {k: v / got for k, v in sorted(sources.items())} if got else {}
    out["count_by_source"] = dict(sorted(sources.items()))
    out["llm_classified"] = sources.get("llm", 0)
    out["fallbacks"] = sources.get("fallback", 0)
    out["e2e_ms_by_source"] = {
        src: {
            "n": len(v),
            "p50": pct(v, 0.5),
            "p95": pct(v, 0.95),
            "p99": pct(v, 0.99),
            "max": max(v),
        }
        for src, v in sorted(by_source.items())
    }
    llm = [r for r in recs if r[2] == "llm"]
    prompt = sum(r[3] for r in recs)
    completion = sum(r[4] for r in recs)
    calls = sum(r[5] for r in recs)
    cost = sum(r[6] for r in recs)
    if got:
        out["llm_calls_total"] = calls
        out["llm_calls_per_msg"] = calls / got
        out["prompt_tokens_per_msg"] = prompt / got
        out["completion_tokens_per_msg"] = completion / got
        out["cost_per_1k_usd"] = cost / got * 1000
    if llm:
        out["prompt_tokens_per_llm_msg"] = sum(r[3] for r in llm) / len(llm)
        out["completion_tokens_per_llm_msg"] = sum(r[4] for r in llm) / len(llm)
        out["cost_per_1k_llm_usd"] = sum(r[6] for r in llm) / len(llm) * 1000
    out["cpu_s"] = cpu
    if got:
        out["worker_cpu_ms_per_msg"] = cpu.get("workers", 0.0) / got * 1000
        out["cpu_ms_per_msg"] = {
            k: v / got * 1000 for k, v in cpu.items() if k not in ("host_total",)
        }
    if cpu.get("host_total"):
        out["host_busy_cores"] = cpu["host_busy"] / cpu["host_total"] * (os.cpu_count() or 1)
        ours = sum(v for k, v in cpu.items() if k not in ("host_busy", "host_total"))
        out["others_busy_cores"] = (
            (cpu["host_busy"] - ours) / cpu["host_total"] * (os.cpu_count() or 1)
        )
    out["wall_s"] = wall
    return out


# -- printing ---------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_phase(r: dict[str, Any], latency_ms: float | None = None) -> None:
    print(
        f"\n== {r['phase']} ==  (background load before it: "
        f"{_f(r.get('background_load_before'), 2)} cores)"
    )
    print(
        f"  messages: {r['expected']} sent, {r['received']} verdicts, {r['lost']} missing"
        + (f" ({r.get('collector_stopped')})" if r.get("collector_stopped") else "")
        + (f", {r['collector_duplicates']} duplicates" if r.get("collector_duplicates") else "")
    )
    for who, err in (
        ("collector", r.get("collector_error")),
        ("producer", (r.get("producer") or {}).get("error")),
    ):
        if err:
            print(f"  {who} error: {err}")
    if "msg_s_first_to_last" in r:
        print(
            f"  throughput: {_f(r['msg_s_first_to_last'])} msg/s first-to-last verdict "
            f"({_f(r['window_s'], 2)} s), {_f(r['msg_s_steady'])} msg/s steady "
            f"(verdicts 10%..99%); publish {_f(r.get('publish_msg_s'))} msg/s"
        )
    e = r.get("e2e_ms")
    if e:
        print(
            f"  end-to-end latency ms: p50 {_f(e['p50'])}  p95 {_f(e['p95'])}  "
            f"p99 {_f(e['p99'])}  max {_f(e['max'])}"
        )
        if latency_ms is not None:
            print(
                f"  added over the LLM's configured {latency_ms:g} ms: p50 "
                f"{_f(e['p50'] - latency_ms)}  p95 {_f(e['p95'] - latency_ms)}  "
                f"p99 {_f(e['p99'] - latency_ms)}"
            )
        own = r.get("llm_own") or {}
        if own.get("llm_own_ms"):
            m = own["llm_own_ms"]
            print(
                f"  the simulated LLM's own latency per call (measured inside it, "
                f"{own['calls']} calls): p50 {_f(m['p50'])}  p95 {_f(m['p95'])}  "
                f"p99 {_f(m['p99'])}  max {_f(m['max'])}"
            )
            print(f"  e2e p99 - LLM own p99: {_f(e['p99'] - m['p99'])} ms")
        if own.get("added_over_own_ms"):
            a = own["added_over_own_ms"]
            print(
                f"  added over each message's own LLM call ({own['matched']} matched): "
                f"p50 {_f(a['p50'])}  p95 {_f(a['p95'])}  p99 {_f(a['p99'])}  "
                f"max {_f(a['max'])}"
            )
        for src, b in (r.get("e2e_ms_by_source") or {}).items():
            print(
                f"  end-to-end latency of {src}-decided messages ({b['n']}) ms: p50 "
                f"{_f(b['p50'])}  p95 {_f(b['p95'])}  p99 {_f(b['p99'])}  max {_f(b['max'])}"
            )
        w = r.get("worker_latency_ms")
        if w:
            o = r["outside_worker_ms"]
            print(
                f"  in-worker (receipt to verdict built) ms: p50 {_f(w['p50'])}  "
                f"p99 {_f(w['p99'])}; outside it (queue, prefetch buffer, publish, "
                f"delivery) p50 {_f(o['p50'])}  p99 {_f(o['p99'])}"
            )
    if "llm_calls_per_msg" in r:
        print(
            f"  LLM calls per message: {_f(r['llm_calls_per_msg'], 4)} "
            f"({_f(r['llm_calls_total'], 0)} calls)"
        )
        print(
            f"  tokens per message: prompt {_f(r['prompt_tokens_per_msg'])}, completion "
            f"{_f(r['completion_tokens_per_msg'])}"
        )
        if "prompt_tokens_per_llm_msg" in r:
            print(
                f"  tokens per LLM-classified message: prompt "
                f"{_f(r['prompt_tokens_per_llm_msg'])}, completion "
                f"{_f(r['completion_tokens_per_llm_msg'])}"
            )
        print(
            f"  cost per 1,000 messages (gpt-4o-mini): ${_f(r['cost_per_1k_usd'], 4)}"
            + (
                f" (per 1,000 LLM-classified: ${_f(r['cost_per_1k_llm_usd'], 4)})"
                if "cost_per_1k_llm_usd" in r
                else ""
            )
        )
    server = r.get("llm_server")
    if server:
        print(
            f"  the LLM counted: {server['requests']} requests, {server['prompt_tokens']:,} "
            f"prompt and {server['completion_tokens']:,} completion tokens"
            + (
                f"; per LLM-classified message: prompt "
                f"{_f(server['prompt_tokens_per_llm_msg'])}, completion "
                f"{_f(server['completion_tokens_per_llm_msg'], 2)}, requests "
                f"{_f(server['requests_per_llm_msg'], 4)}"
                if "prompt_tokens_per_llm_msg" in server
                else ""
            )
            + f"; ${_f(server['cost_per_1k_usd'], 4)} per 1,000 messages at gpt-4o-mini "
            "prices"
        )
    print(
        "  decided by: "
        + ", ".join(f"{k} {v:.1%}" for k, v in r["share"].items())
        + (f" (fallbacks: {r['fallbacks']})" if "fallbacks" in r else "")
    )
    if "cpu_ms_per_msg" in r:
        c = r["cpu_ms_per_msg"]
        print(
            f"  worker CPU per message: {_f(r['worker_cpu_ms_per_msg'], 3)} ms "
            f"({_f(r['cpu_s'].get('workers'), 2)} CPU s)"
        )
        print(
            "  other CPU per message ms: "
            + ", ".join(
                f"{k} {_f(v, 3)}" for k, v in c.items() if k not in ("workers", "host_busy")
            )
        )
        print(
            f"  host: {_f(r.get('host_busy_cores'), 2)} of {os.cpu_count()} cores busy, "
            f"{_f(r.get('others_busy_cores'), 2)} by processes outside this benchmark"
        )
    if r.get("peak_rss_mb"):
        print(
            "  peak RSS per worker process (VmHWM) MB: "
            + ", ".join(_f(v) for v in r["peak_rss_mb"])
        )


# -- profiling (optional) ----------------------------------------------------------------


class Profiler:
    """py-spy (--gil) and per-thread CPU of each worker, for a window inside a phase."""

    def __init__(self, pids: list[int], out_dir: Path, delay: float, seconds: float) -> None:
        self.pids, self.out_dir, self.delay, self.seconds = pids, out_dir, delay, seconds
        self.result: dict[str, Any] = {}
        self.thread: Any = None

    def __call__(self) -> None:
        import threading

        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        time.sleep(self.delay)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cpu = {pid: _profile.ThreadCPU(pid) for pid in self.pids}
        recs = {}
        for pid in self.pids:
            rec = _profile.record(pid, self.seconds, self.out_dir / f"worker-{pid}.txt")
            _started.append(rec)
            recs[pid] = rec
        t0 = time.monotonic()
        for rec in recs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                rec.wait(self.seconds + 30)
            _stop(rec)
        elapsed = time.monotonic() - t0
        self.result = {
            "seconds": elapsed,
            "thread_cpu_s": {pid: c.stop() for pid, c in cpu.items()},
            "profiles": {
                pid: _profile.summarise(self.out_dir / f"worker-{pid}.txt")
                for pid in self.pids
                if (self.out_dir / f"worker-{pid}.txt").exists()
            },
        }


_KEY_CALLS = (
    "Completions.create",
    "Channel._basic_publish",
    "Message.ack",
    "Channel.message_to_python",
    "ThreadPoolExecutor.submit",
    "BaseModel.",
    "Connection.drain_events (kombu",
    "Hub.call_soon",
    "Hub.fire_timers",
)


def print_profile(result: dict[str, Any]) -> None:
    if not result:
        return
    print(f"\n== worker profile ({result['seconds']:.1f} s window; py-spy --gil) ==")
    for pid, threads in result["thread_cpu_s"].items():
        total = sum(t["user"] + t["system"] for t in threads.values()) or 1.0
        print(
            f"  worker {pid}: {total:.2f} CPU s = {total / result['seconds']:.2f} cores; "
            + ", ".join(
                f"{k} {t['user'] + t['system']:.2f} s "
                f"({(t['user'] + t['system']) / total:.0%}, sys {t['system']:.2f})"
                for k, t in threads.items()
                if t["user"] + t["system"] > 0.005
            )
        )
    for pid, prof in result["profiles"].items():
        if not prof:
            continue
        print(f"  worker {pid}: GIL-holding samples {prof['samples'][0][1]:.0f}")
        print("    by thread: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["threads"]))
        print("    self time:")
        for k, v in prof["self"][:15]:
            print(f"      {v:6.1%}  {k}")
        print("    total time (incl. callees), worker code and the main library calls:")
        for k, v in prof["total"]:
            if v >= 0.01 and ("(worker/" in k or k.startswith(_KEY_CALLS)):
                print(f"      {v:6.1%}  {k}")
        break  # one worker is representative; the raw files hold all


# -- main -------------------------------------------------------------------------------


def naive_prompt_tokens(texts: list[str]) -> float:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))
    from bench.naive import SYSTEM_PROMPT, user_content
    from worker._prompt import count_tokens

    system = count_tokens(SYSTEM_PROMPT) + 4
    return system + statistics.fmean(count_tokens(user_content(t)) + 4 for t in texts)


def _tree_state(src: Path) -> str:
    """Commit and uncommitted changes of the worker tree, to say what was measured."""
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return f"{src} (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "worker"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return f"{src} @ {head.stdout.strip()}" + (
            f" + uncommitted {', '.join(changed)}" if changed else ""
        )
    except (OSError, subprocess.SubprocessError):
        return str(src)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--messages",
        type=int,
        default=20000,
        help="throughput phase size (0: no throughput phase; give --latency-rate)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish rate of the throughput phase, msg/s (0: as fast as possible)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=8000,
        help="throughput phase: a closed loop, publishing while fewer than this "
        "many requests are unanswered (0: publish them all at once, and "
        "the phase measures how fast the workers drain a full queue); it "
        "must exceed rate x latency (Little's law): 1,000 msg/s with "
        "verdicts taking 2-4 s under load needs several thousand",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=300.0,
        help="rate of the latency phase (0: 50%% of the measured throughput)",
    )
    p.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of the latency phase"
    )
    p.add_argument(
        "--llm-timing",
        choices=("real", "fixed", "instant"),
        default="real",
        help="the simulated LLM's timing: a real model's (default), a fixed "
        "latency whatever the reply's length, or none",
    )
    p.add_argument("--ttft-ms", type=float, default=600.0, help="real: median first token")
    p.add_argument("--ttft-sigma", type=float, default=0.25, help="real: its lognormal sigma")
    p.add_argument("--token-ms", type=float, default=15.0, help="real: per output token")
    p.add_argument(
        "--prefill-ms-per-1k", type=float, default=40.0, help="real: per 1,000 prompt tokens"
    )
    p.add_argument("--latency-ms", type=float, default=300.0, help="fixed: the latency")
    p.add_argument("--jitter-ms", type=float, default=50.0, help="fixed: its jitter (+/-)")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--connections", type=int, default=2, help="producer connections")
    p.add_argument("--warmup", type=int, default=500, help="unreported warm-up messages")
    p.add_argument(
        "--naive-messages",
        type=int,
        default=24,
        help="the naive design writes ~100 output tokens a message: ~2 s each",
    )
    p.add_argument("--naive-processes", type=int, default=2)
    p.add_argument(
        "--allow-repeats",
        action="store_true",
        help="send the dataset texts as they are (the verdict cache will hit)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="give the workers a shared Redis cache (MODERATION_REDIS_URL)",
    )
    p.add_argument(
        "--authors",
        type=int,
        default=0,
        help="requests carry an author id (one of this many), so the signal rules count "
        "them (with --redis)",
    )
    p.add_argument(
        "--worker-env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra worker environment, e.g. MODERATION_BATCH_SIZE=32",
    )
    p.add_argument(
        "--worker-src",
        metavar="DIR",
        type=Path,
        default=ROOT,
        help="run the workers from this source tree (A/B of a proposed change)",
    )
    p.add_argument(
        "--fake-src",
        metavar="DIR",
        type=Path,
        default=None,
        help="run the simulated LLM from this tree (default: --worker-src)",
    )
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-fast", action="store_true", help="only the naive design")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--keep-logs", action="store_true", help="print where the logs are")
    p.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        default=None,
        help="py-spy the workers during the throughput phase (needs py-spy)",
    )
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--json", metavar="PATH", help="write every number here as JSON")
    p.add_argument(
        "--wait-quiet",
        metavar="CORES",
        type=float,
        default=0.0,
        help="before each phase, wait until other processes use fewer cores",
    )
    p.add_argument("--wait-quiet-max", metavar="S", type=float, default=300.0)
    p.add_argument(
        "--dump",
        metavar="DIR",
        type=Path,
        default=None,
        help="write each verdict's timings here, one JSON line per message",
    )
    args = p.parse_args(argv)
    global DUMP_DIR, QUIET, AUTHORS
    DUMP_DIR = args.dump
    AUTHORS = args.authors
    QUIET = (args.wait_quiet, args.wait_quiet_max)

    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="moderation-bench-"))
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    if args.redis:
        extra_env["MODERATION_REDIS_URL"] = args.redis
        extra_env.setdefault("MODERATION_CACHE_TTL_S", "900")
    texts = load_texts()
    feed = Feed(
        texts,
        unique=not args.allow_repeats,
        base=random.randrange(1, 10**6) * 10**6 if args.redis else 0,
    )
    results: dict[str, Any] = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "json"},
            "cpus": os.cpu_count(),
            "worker_env": extra_env,
        },
    }
    results["config"]["worker_tree"] = _tree_state(args.worker_src.resolve())
    print(f"worker source: {results['config']['worker_tree']}", flush=True)
    speed = results["config"]["python_ns_per_loop"] = _proc.python_speed()
    print(
        f"machine speed: {speed:.1f} ns per iteration of a fixed Python loop (lower is "
        "faster; this shared VM's speed varies: compare runs by it)",
        flush=True,
    )
    lost = 0
    tp_texts: list[str] = []
    beam = _proc.find_pids("beam.smp")
    try:
        with private_vhost() as vhost:
            broker_url = f"amqp://guest:guest@{RABBIT}/{vhost}"
            from kombu import Connection

            from worker import topology
            from worker.settings import Settings

            with Connection(broker_url) as conn:  # the contract's queues and exchanges
                topology.declare_all(conn.default_channel, Settings(broker_url=broker_url))
            llm_proc, llm_url = start_fake_llm(
                fake_llm_flags(args), tmp, (args.fake_src or args.worker_src).resolve()
            )
            print(
                f"vhost {vhost}; simulated LLM {llm_url}: {describe_timing(args)}; logs in {tmp}",
                flush=True,
            )

            if not args.skip_fast:
                launcher, workers = start_workers(
                    args.workers, broker_url, llm_url, tmp, extra_env, args.worker_src.resolve()
                )
                watch = Watch(
                    {
                        "workers": [w.pid for w in workers],
                        "fake_llm": [llm_proc.pid],
                        "rabbitmq": beam,
                    }
                )
                print(
                    f"{args.workers} worker process(es) ready: {[w.pid for w in workers]}",
                    flush=True,
                )
                if args.warmup:
                    r = run_phase(
                        "warm-up",
                        broker_url,
                        request_bodies("w-", feed.take(args.warmup)),
                        rate=0,
                        connections=1,
                        watch=watch,
                        timeout_s=120,
                        prefix="w-",
                    )
                    if r["lost"]:
                        raise HarnessError(f"warm-up lost {r['lost']} messages")
                n = args.messages
                r = {}
                if n:
                    profiler = None
                    if args.profile is not None:
                        if not _profile.available():
                            raise HarnessError("--profile needs py-spy (pip install py-spy)")
                        profiler = Profiler(
                            [w.pid for w in workers], args.profile, 3.0, args.profile_seconds
                        )
                    tp_texts = feed.take(n)
                    scripts_before = _redis_scripts(args.redis)
                    in_flight = 0 if args.rate else args.in_flight
                    mode = (
                        f"at {args.rate:,.0f} msg/s"
                        if args.rate
                        else f"closed loop, <= {in_flight:,} unanswered"
                        if in_flight
                        else "a full queue drained"
                    )
                    r = run_phase(
                        f"throughput ({mode})",
                        broker_url,
                        request_bodies("tp-", tp_texts),
                        rate=args.rate,
                        connections=args.connections,
                        watch=watch,
                        timeout_s=max(180.0, n / 100),
                        prefix="tp-",
                        on_start=profiler,
                        in_flight=in_flight,
                        llm_url=llm_url,
                    )
                    r["mode"] = mode
                    if args.redis and args.authors:
                        # the counters are one EVALSHA per group of arrivals (the score
                        # cache uses none), so this is messages per round trip
                        trips = _redis_scripts(args.redis) - scripts_before
                        r["signal_round_trips"] = trips
                        print(
                            f"  signals: {trips:,} counter round trips for {n:,} messages "
                            f"({n / max(trips, 1):.1f} messages per round trip)"
                        )
                    if profiler is not None:
                        r["profile"] = profiler.result
                    r["peak_rss_mb"] = [_proc.peak_rss_mb(w.pid) for w in workers]
                    r["rss_mb"] = [_proc.rss_mb(w.pid) for w in workers]
                    results["throughput"] = r
                    lost += r["lost"]
                    print_phase(r)
                    print_profile(r.get("profile") or {})
                if not args.skip_latency:
                    rate = args.latency_rate or 0.5 * r.get("msg_s_steady", 0.0)
                    if rate <= 0:
                        raise HarnessError("--messages 0 needs --latency-rate")
                    count = max(int(rate * args.latency_seconds), 100)
                    lat_texts = feed.take(count)
                    tags = (
                        {f"lat-{i}": int(t.rsplit(" #", 1)[1]) for i, t in enumerate(lat_texts)}
                        if feed.unique
                        else None
                    )
                    r = run_phase(
                        f"latency at {rate:,.0f} msg/s",
                        broker_url,
                        request_bodies("lat-", lat_texts),
                        rate=rate,
                        connections=1,
                        watch=watch,
                        timeout_s=args.latency_seconds + 120,
                        prefix="lat-",
                        llm_url=llm_url if _has_stats(llm_url) else None,
                        tags=tags,
                    )
                    r["rate"] = rate
                    # verdicts 10%..99%: first-to-last also spans the last message's own
                    # latency (~1 s of a 20 s phase), which is not a rate falling behind
                    r["sustained"] = r.get("msg_s_steady", 0.0) >= 0.95 * rate
                    r["peak_rss_mb"] = [_proc.peak_rss_mb(w.pid) for w in workers]
                    e = r.get("e2e_ms") or {}
                    if args.llm_timing == "fixed":
                        r["added_ms"] = {k: v - args.latency_ms for k, v in e.items()}
                    results["latency"] = r
                    lost += r["lost"]
                    print_phase(
                        r, latency_ms=args.latency_ms if args.llm_timing == "fixed" else None
                    )
                results["queues_after"] = queue_depths(
                    broker_url,
                    ["moderation.requests", "moderation.dead", "moderation.verdicts.unrouted"],
                )
                launcher.stop_all(timeout=20)

            if not args.skip_naive:
                naive = start_naive(broker_url, llm_url, tmp, args.naive_processes)
                os.environ["BENCH_BROKER_URL"] = broker_url
                from bench.naive import TASK_NAME, TASK_QUEUE, naive_app

                def send(request: dict[str, Any]) -> None:
                    naive_app.send_task(TASK_NAME, args=[request], queue=TASK_QUEUE)

                watch = Watch(
                    {"workers": [naive.pid], "fake_llm": [llm_proc.pid], "rabbitmq": beam}
                )
                run_phase(
                    "naive warm-up",
                    broker_url,
                    None,
                    rate=0,
                    connections=1,
                    watch=watch,
                    timeout_s=60,
                    send_naive=send,
                    naive_texts=feed.take(4),
                    prefix="nw-",
                )
                n = args.naive_messages
                r = run_phase(
                    "naive",
                    broker_url,
                    None,
                    rate=0,
                    connections=1,
                    watch=watch,
                    timeout_s=10 * n + 60,
                    send_naive=send,
                    naive_texts=feed.take(n),
                    prefix="nv-",
                    llm_url=llm_url,
                )
                r["peak_rss_mb"] = [_proc.peak_rss_mb(pid) for pid in _proc.tree(naive.pid)]
                results["naive"] = r
                lost += r["lost"]
                print_phase(r)
                with contextlib.suppress(Exception):
                    naive_app.close()
                _stop(naive)
            _stop(llm_proc)
            if tp_texts and "throughput" in results:
                # the naive prompt for the very texts the throughput phase sent, counted
                # as the simulated LLM counts usage (o200k tokens + 4 per chat message)
                results["naive_prompt_tokens_same_texts"] = naive_prompt_tokens(tp_texts)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        _cleanup()
        return 130
    except Exception as exc:  # HarnessError, or the shared broker went away under us
        print(f"\nharness error: {type(exc).__name__}: {exc}", file=sys.stderr)
        _cleanup()
        return 2
    finally:
        _cleanup()

    verdicts = report(results, args)
    results["targets"] = verdicts
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.keep_logs:
        print(f"logs: {tmp}")
    if lost:
        print(
            f"\nFAIL: {lost} message(s) got no verdict within the phase timeout "
            f"(queues after the run: {results.get('queues_after')})",
            file=sys.stderr,
        )
        return 1
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The targets, each with its measured value, in one table."""
    tp, lat, naive = results.get("throughput"), results.get("latency"), results.get("naive")
    rows: dict[str, Any] = {}

    def row(name: str, value: float | None, target: str, ok: bool | None) -> None:
        rows[name] = {"value": value, "target": target, "met": ok}

    phases = [p for p in (tp, lat) if p]
    if phases:
        fallbacks = sum(p.get("fallbacks", 0) for p in phases)
        row("fallbacks (throughput + latency phases)", fallbacks, "0", fallbacks == 0)
    if tp:
        v = tp.get("msg_s_steady")
        row(
            f"throughput msg/s (steady, {tp.get('mode', '')})",
            v,
            f">= {TARGET_MSG_S:,.0f}",
            v is not None and v >= TARGET_MSG_S,
        )
    if tp and naive and naive.get("msg_s_first_to_last"):
        v = tp["msg_s_steady"] / naive["msg_s_first_to_last"]
        row("speed-up over naive, same timing (x)", v, "(printed)", None)
    server, naive_server = (tp or {}).get("llm_server") or {}, (naive or {}).get("llm_server") or {}
    v = server.get("completion_tokens_per_llm_msg")
    if v is not None:
        row(
            "completion tokens per LLM-classified message",
            v,
            f"<= {TARGET_COMPLETION_PER_LLM_MSG:g}",
            v <= TARGET_COMPLETION_PER_LLM_MSG,
        )
    if server.get("prompt_tokens_per_llm_msg") and naive_server.get("prompt_tokens_per_llm_msg"):
        v = server["prompt_tokens_per_llm_msg"] / naive_server["prompt_tokens_per_llm_msg"]
        row(
            "prompt tokens per LLM message vs naive (ratio)",
            v,
            "<= 0.333",
            v <= TARGET_PROMPT_RATIO,
        )
    if server.get("cost_per_1k_usd") is not None and naive_server.get("cost_per_1k_usd"):
        v = server["cost_per_1k_usd"] / naive_server["cost_per_1k_usd"]
        row("cost per 1,000 messages vs naive (ratio)", v, "<= 0.2", v <= TARGET_COST_RATIO)
    if lat:
        note = "" if lat.get("sustained") else " (rate NOT sustained)"
        by = lat.get("e2e_ms_by_source") or {}
        llm, rules = by.get("llm"), by.get("rules")
        if llm:
            row(
                f"LLM-decided e2e p50 s at {lat['rate']:,.0f} msg/s{note}",
                llm["p50"] / 1000,
                f"<= {TARGET_LLM_P50_S:g}",
                llm["p50"] / 1000 <= TARGET_LLM_P50_S,
            )
            row(
                f"LLM-decided e2e p99 s at {lat['rate']:,.0f} msg/s{note}",
                llm["p99"] / 1000,
                f"<= {TARGET_LLM_P99_S:g}",
                llm["p99"] / 1000 <= TARGET_LLM_P99_S,
            )
        if rules:
            row(
                f"rules-decided e2e p99 ms, same run ({rules['n']} msgs)",
                rules["p99"],
                f"<= {TARGET_RULES_P99_MS:g}",
                rules["p99"] <= TARGET_RULES_P99_MS,
            )
    if tp:
        v = tp.get("worker_cpu_ms_per_msg")
        row("worker CPU ms/msg (throughput phase)", v, "(printed)", None)
        peaks = [x for x in tp.get("peak_rss_mb", []) if x is not None]
        row("peak RSS MB per worker", max(peaks) if peaks else None, "(printed)", None)
    if naive and tp:
        print(
            f"\nnaive design, same simulated LLM: {_f(naive.get('msg_s_first_to_last'), 2)} "
            f"msg/s; per message: {_f(naive_server.get('prompt_tokens_per_llm_msg'))} prompt "
            f"and {_f(naive_server.get('completion_tokens_per_llm_msg'))} completion tokens, "
            f"${_f(naive_server.get('cost_per_1k_usd'), 4)} per 1,000"
        )
    if rows:
        print("\n== targets ==")
        for name, r in rows.items():
            mark = {True: "met", False: "MISSED", None: ""}[r["met"]]
            print(f"  {name:<52} {_f(r['value'], 3):>10}  target {r['target']:<10} {mark}")
    if results.get("queues_after"):
        print(f"  queues after the run: {results['queues_after']}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
