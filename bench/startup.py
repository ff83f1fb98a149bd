"""How long a start takes: the embedded command to its last verdict, a worker to ready.

    python bench/startup.py [--runs 3]

Each in a fresh process, first with an empty rule-database cache (what the first start
on a machine, or the first after an upgrade, pays), then with the cache it left behind
(every later start). The embedded command is ``python -m worker moderate
examples/messages.jsonl`` with the LLM off, timed from launch to its last verdict line
and to its exit; the worker is ``celery -A worker worker`` on a vhost of its own, timed
from launch to its health file (written once it consumes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.testing.amqp import temporary_vhost  # noqa: E402

EXAMPLES = ROOT / "examples" / "messages.jsonl"


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODERATION_", "OPENAI_"))}
    env.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken"))
    env["MODERATION_CACHE_DIR"] = str(cache)
    return env


def moderate(cache: Path) -> tuple[float, float, int]:
    """(s to the last verdict, s to exit, verdicts)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "moderate", str(EXAMPLES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(cache),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    last, count = started, 0
    for _ in proc.stdout:
        last, count = time.perf_counter(), count + 1
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"moderate exited {proc.returncode}")
    return last - started, time.perf_counter() - started, count


def worker_ready(cache: Path, vhost: str, tmp: Path) -> float:
    health = tmp / "alive"
    health.unlink(missing_ok=True)
    env = {
        **_env(cache),
        "MODERATION_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "MODERATION_HEALTH_FILE": str(health),
        "MODERATION_METRICS_PORT": "0",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--without-mingle",
         "--without-gossip", "-l", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    try:
        while not health.exists():
            if proc.poll() is not None:
                raise SystemExit(f"worker exited {proc.returncode}")
            if time.perf_counter() - started > 120:
                raise SystemExit("worker not ready after 120 s")
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="warm runs of each")
    p.add_argument("--skip-worker", action="store_true", help="only the embedded command")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="moderation-startup-") as name:
        tmp = Path(name)
        cache = tmp / "cache"
        cold = moderate(cache)
        warm = [moderate(cache) for _ in range(args.runs)]
        print(f"moderate {EXAMPLES.relative_to(ROOT)} ({cold[2]} verdicts), LLM off:")
        print(f"  empty cache: last verdict {cold[0]:.2f} s, exit {cold[1]:.2f} s")
        print(
            f"  warm cache ({args.runs} runs): last verdict median "
            f"{statistics.median(w[0] for w in warm):.2f} s (max {max(w[0] for w in warm):.2f}), "
            f"exit median {statistics.median(w[1] for w in warm):.2f} s"
        )
        if args.skip_worker:
            return
        with temporary_vhost("moderation-startup") as vhost:
            cache_w = tmp / "cache-worker"
            first = worker_ready(cache_w, vhost, tmp)
            ready = [worker_ready(cache_w, vhost, tmp) for _ in range(args.runs)]
        print("celery -A worker worker, launch to consuming (health file):")
        print(f"  empty cache: {first:.2f} s")
        print(
            f"  warm cache ({args.runs} runs): median {statistics.median(ready):.2f} s "
            f"(max {max(ready):.2f})"
        )


if __name__ == "__main__":
    main()
