"""Calls in flight from one process: a thread pool with the sync ``openai`` client against
an asyncio loop with ``AsyncOpenAI``, same requests, same simulated endpoint.

The LLM stage needs ~1,000 msg/s with calls that take ~1 s, i.e. tens of calls in flight
per process. This measures what each way of holding them costs the calling process (CPU
per call, calls per second, latency added over the endpoint's own) so the choice is a
number, not a habit.

    python bench/client_concurrency.py --calls 2000 --in-flight 64,256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker._llm_call import CallLimits, _body, _http  # noqa: E402

ITEMS = [
    (f"message number {i}: see you at the game tonight, bring snacks", None) for i in range(16)
]


def _server(port: int, latency_ms: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.testing.fake_llm",
            "--port",
            str(port),
            "--fixed-latency-ms",
            str(latency_ms),
            "--jitter-ms",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _http.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except _http.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("fake LLM did not start")


def _options() -> dict[str, object]:
    return {"headers": {"Content-Type": "application/json"}, "timeout": 30.0}


def run_threads(base_url: str, calls: int, in_flight: int, body: bytes) -> list[float]:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    durations: list[float] = []

    def one(_: int) -> None:
        started = time.monotonic()
        client.post("/chat/completions", cast_to=_http.Response, content=body, options=_options())  # type: ignore[arg-type]
        durations.append(time.monotonic() - started)

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(calls)))
    client.close()
    return durations


def run_asyncio(base_url: str, calls: int, in_flight: int, body: bytes) -> list[float]:
    durations: list[float] = []

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        remaining = iter(range(calls))

        async def lane() -> None:
            for _ in remaining:
                started = time.monotonic()
                await client.post(
                    "/chat/completions", cast_to=_http.Response, content=body, options=_options()
                )  # type: ignore[arg-type]
                durations.append(time.monotonic() - started)

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        await client.close()

    asyncio.run(main())
    return durations


def measure(
    name: str,
    run: Callable[..., list[float]],
    base_url: str,
    calls: int,
    in_flight: int,
    body: bytes,
    latency_s: float,
) -> None:
    run(base_url, min(calls, in_flight * 2), in_flight, body)  # warm-up: connections, imports
    cpu0, wall0 = time.process_time(), time.monotonic()
    durations = run(base_url, calls, in_flight, body)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    added = sorted(d - latency_s for d in durations)
    print(
        f"  {name:8} {in_flight:4} in flight: {calls / wall:7.1f} calls/s "
        f"(ideal {in_flight / latency_s:6.1f}), client CPU {1000 * cpu / calls:5.2f} ms/call, "
        f"added latency p50 {1000 * statistics.median(added):6.1f} ms "
        f"p99 {1000 * added[int(len(added) * 0.99) - 1]:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--in-flight", default="64,256")
    parser.add_argument("--latency-ms", type=float, default=1000.0)
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    server = _server(args.port, args.latency_ms)
    base_url = f"http://127.0.0.1:{args.port}/v1"
    limits = CallLimits(max_tokens=120, timeout_s=30.0, first_token_s=30.0)
    body = _body("gpt-4o-mini", ITEMS, limits, stream=False)
    print(
        f"{args.calls} calls of {len(ITEMS)} items each, endpoint latency "
        f"{args.latency_ms:.0f} ms fixed, {os.cpu_count()} cores"
    )
    try:
        for in_flight in (int(n) for n in args.in_flight.split(",")):
            # A/B in one run: each pair back to back, so machine drift hits both alike
            measure(
                "threads",
                run_threads,
                base_url,
                args.calls,
                in_flight,
                body,
                args.latency_ms / 1000,
            )
            measure(
                "asyncio",
                run_asyncio,
                base_url,
                args.calls,
                in_flight,
                body,
                args.latency_ms / 1000,
            )
    finally:
        server.kill()


if __name__ == "__main__":
    main()
