"""Soak: the worker at a steady rate for a long time, with LLM faults, watched per window.

    python bench/soak.py [--minutes 20] [--rate 400] [--fault-rate 0.01] [--workers 2]

What leaks or drifts only shows over time: worker memory, Redis keys (the shared score
cache, whose entries expire after ``--cache-ttl-s``), latency. The harness is
``bench/run.py``'s (a vhost of its own, the simulated LLM at a real model's timing, real
worker processes, a paced producer and a collector); the run is cut into windows of
``--window-s``, and after each one it prints the window's rate, end-to-end p50/p99,
fallbacks and losses, each worker's RSS and the Redis keys. The summary compares the
last window with the first after warm-up (``--warmup-windows``): RSS growth, Redis keys
against the TTL's bound (rate x TTL), p99 spread.

The workers run with ``MALLOC_ARENA_MAX=2``, as the image runs them (``--worker-env
MALLOC_ARENA_MAX=16`` for glibc's default on 2 cores, 8 per core, whose arenas creep).

Faults: ``--fault-rate`` of the LLM calls fail, spread over 429, 500, malformed and
truncated replies (the simulator's), which the worker retries or re-asks.

Exits 1 if any message got no verdict.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import _proc  # noqa: E402
from bench._data import load_texts  # noqa: E402
from bench.run import (  # noqa: E402
    RABBIT,
    Feed,
    Watch,
    fake_control,
    private_vhost,
    request_bodies,
    run_phase,
    start_fake_llm,
    start_workers,
)

FAULTS = ("429", "500", "malformed", "truncated")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=400.0, help="msg/s (half the closed loop)")
    p.add_argument("--window-s", type=float, default=60.0)
    p.add_argument("--warmup-windows", type=int, default=2)
    p.add_argument("--fault-rate", type=float, default=0.01, help="share of LLM calls")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="flushed at start")
    p.add_argument("--cache-ttl-s", type=int, default=300)
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="K=V", help="extra worker setting"
    )
    args = p.parse_args(argv)

    print(f"machine speed: {_proc.python_speed():.1f} ns per loop", flush=True)
    cache = redis.Redis.from_url(args.redis)
    cache.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="moderation-soak-"))
    feed = Feed(load_texts(), unique=True, base=random.randrange(1, 10**6) * 10**6)
    windows = max(1, round(args.minutes * 60 / args.window_s))
    per_window = int(args.rate * args.window_s)
    rows: list[dict[str, Any]] = []
    lost = 0
    with private_vhost() as vhost:
        broker_url = f"amqp://guest:guest@{RABBIT}/{vhost}"
        from kombu import Connection

        from worker import topology
        from worker.settings import Settings

        with Connection(broker_url) as conn:
            topology.declare_all(conn.default_channel, Settings(broker_url=broker_url))
        llm_proc, llm_url = start_fake_llm(["--timing", "real"], tmp)
        fake_control(llm_url, rates={f: args.fault_rate / len(FAULTS) for f in FAULTS})
        env = {
            "MODERATION_REDIS_URL": args.redis,
            "MODERATION_CACHE_TTL_S": str(args.cache_ttl_s),
            "MALLOC_ARENA_MAX": "2",  # as the image runs them (docker/Dockerfile)
        }
        env.update(kv.split("=", 1) for kv in args.worker_env)
        launcher, workers = start_workers(args.workers, broker_url, llm_url, tmp, env)
        watch = Watch({"workers": [w.pid for w in workers], "fake_llm": [llm_proc.pid]})
        print(
            f"{args.workers} workers, {args.rate:g} msg/s for {args.minutes:g} min in "
            f"{windows} windows; LLM faults {args.fault_rate:.1%} of calls; logs in {tmp}",
            flush=True,
        )
        print(
            f"{'window':>6} {'t_min':>6} {'msg/s':>7} {'p50_ms':>7} {'p99_ms':>8} "
            f"{'fallback':>8} {'lost':>5} {'rss_mb':>15} {'redis_keys':>10}",
            flush=True,
        )
        started = time.monotonic()
        try:
            for n in range(windows):
                prefix = f"s{n}-"
                r = run_phase(
                    f"window {n + 1}",
                    broker_url,
                    request_bodies(prefix, feed.take(per_window)),
                    rate=args.rate,
                    connections=1,
                    watch=watch,
                    timeout_s=args.window_s + 120,
                    prefix=prefix,
                )
                row = {
                    "window": n + 1,
                    "t_min": (time.monotonic() - started) / 60,
                    "msg_s": r.get("msg_s_steady", 0.0),
                    "p50": r.get("e2e_ms", {}).get("p50", 0.0),
                    "p99": r.get("e2e_ms", {}).get("p99", 0.0),
                    "fallbacks": r.get("fallbacks", 0),
                    "lost": r["lost"],
                    "rss": [_proc.rss_mb(w.pid) or 0.0 for w in workers],
                    "keys": cache.dbsize(),
                }
                rows.append(row)
                lost += r["lost"]
                rss = "/".join(f"{v:.0f}" for v in row["rss"])
                print(
                    f"{row['window']:>6} {row['t_min']:>6.1f} {row['msg_s']:>7.0f} "
                    f"{row['p50']:>7.0f} {row['p99']:>8.0f} {row['fallbacks']:>8} "
                    f"{row['lost']:>5} {rss:>15} {row['keys']:>10}",
                    flush=True,
                )
        finally:
            launcher.stop_all()
            llm_proc.terminate()
    steady = rows[args.warmup_windows :] or rows
    first, last = steady[0], steady[-1]
    growth = [
        (b - a) / a * 100 if a else 0.0 for a, b in zip(first["rss"], last["rss"], strict=True)
    ]
    p99s = [r["p99"] for r in steady]
    bound = int(args.rate * args.cache_ttl_s)
    print(
        f"\nSOAK minutes={args.minutes:g} rate={args.rate:g} faults={args.fault_rate:.1%} "
        f"messages={sum(per_window for _ in rows)} lost={lost} "
        f"fallbacks={sum(r['fallbacks'] for r in rows)} "
        f"rss_growth_pct={'/'.join(f'{g:+.1f}' for g in growth)} "
        f"(window {first['window']} to {last['window']}) "
        f"redis_keys_max={max(r['keys'] for r in rows)} (ttl bound {bound}) "
        f"p99_ms min/median/max={min(p99s):.0f}/{statistics.median(p99s):.0f}/{max(p99s):.0f}",
        flush=True,
    )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
