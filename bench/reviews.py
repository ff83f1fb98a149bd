"""A flood of review verdicts with the review store on and off: does storing them slow
the verdict path?

    python bench/reviews.py [--messages 10000] [--rounds 2] [--workers 1]

The workers run with the LLM stage off, so every message the rules do not decide gets
the fallback action, ``review``: every verdict is a review verdict. Each round runs the
same number of messages with the store off, written by the worker itself, and written
by a ``python -m worker review-store`` process of its own (the worker only publishes
the items), and prints verdicts/s from the first to the last verdict, and for the
store how long after the last verdict the last item was committed. RabbitMQ vhost and
database are the run's own and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _proc  # noqa: E402
from worker import _db  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.testing.amqp import (  # noqa: E402
    Outgoing,
    Producer,
    VerdictCollector,
    WorkerLauncher,
    temporary_vhost,
)

ADMIN = os.environ.get("MODERATION_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _round(broker_url: str, env: dict[str, str], n: int, workers: int, tag: str) -> dict:
    bodies = [
        Outgoing(f"{tag}-{i}", f'{{"id":"{tag}-{i}","text":"an ordinary message {i}"}}'.encode())
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as logs, WorkerLauncher(env, Path(logs)) as launcher:
        pids = [w.proc.pid for w in launcher.start_many(workers) if w.proc is not None]
        with VerdictCollector(broker_url, Settings(broker_url=broker_url), prefix=tag) as col:
            started = time.monotonic()
            cpu_before = _workers_cpu(pids)
            confirmed = Producer(broker_url, retry=False).publish(
                bodies, window=1000, deadline_s=300
            )
            # a request the broker never confirmed is the producer's to send again, not
            # the worker's loss: only confirmed ones are waited for
            missing = col.wait_for(confirmed, timeout=300)
            cpu = _workers_cpu(pids) - cpu_before
            with col.lock:
                times = sorted(col.first_at.values())
    return {
        "verdicts": len(times),
        "unconfirmed": n - len(confirmed),
        "cpu_ms": cpu / max(len(times), 1) * 1000,
        "missing": len(missing),
        "msg_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "last_verdict": times[-1] if times else started,
    }


def _workers_cpu(pids: list[int]) -> float:
    """CPU seconds of the worker processes and their children so far."""
    return sum(sum(_proc.tree_cpu(pid).values()) for pid in pids)


def _stored_by(database_url: str, tag: str, n: int, timeout: float = 120.0) -> float | None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM review_items WHERE request_id LIKE %s", (f"{tag}-%",)
            ).fetchone()
            if row and row[0] >= n:
                return time.monotonic()
            time.sleep(0.05)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    name = f"moderation_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        _db.upgrade(database_url)
        with temporary_vhost("moderation-bench") as vhost:
            broker_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("MODERATION_", "OPENAI_"))
            }
            base.update(MODERATION_BROKER_URL=broker_url, MODERATION_METRICS_PORT="0")
            print(f"{args.messages} messages a run, all review verdicts, {args.workers} worker(s)")
            print(
                f"{'round':>5} {'store':>8} {'verdicts/s':>11} {'worker ms/msg':>14} "
                f"{'unconfirmed':>12} {'missing':>8} {'stored +s':>10}"
            )
            store_env = {**base, "MODERATION_DATABASE_URL": database_url}
            for r in range(1, args.rounds + 1):
                for mode in ("off", "worker", "separate"):
                    tag = f"r{r}{mode}{uuid.uuid4().hex[:4]}"
                    env = base if mode == "off" else store_env
                    separate = None
                    if mode == "separate":
                        env = {**store_env, "MODERATION_REVIEW_STORE_IN_WORKER": "false"}
                        separate = subprocess.Popen(
                            [sys.executable, "-m", "worker", "review-store"],
                            cwd=ROOT,
                            env=store_env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    try:
                        result = _round(broker_url, env, args.messages, args.workers, tag)
                        lag = "-"
                        if mode != "off":
                            at = _stored_by(database_url, tag, args.messages)
                            lag = f"{at - result['last_verdict']:.2f}" if at else "timeout"
                    finally:
                        if separate is not None:
                            separate.terminate()
                            separate.wait(20)
                    print(
                        f"{r:>5} {mode:>8} {result['msg_s']:>11,.0f} {result['cpu_ms']:>14.3f} "
                        f"{result['unconfirmed']:>12} {result['missing']:>8} {lag:>10}",
                        flush=True,
                    )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
