"""What a message costs when it arrives alone: CPU of ``Pipeline.prepare`` with gaps.

    python bench/wakeups.py [--messages 2000] [--gaps 0.5,2,10]

The end-to-end benchmark shows worker CPU per message rising as the rate falls (8 ms at
20 msg/s, 0.55 ms in the closed loop on the same day). This separates the reasons, in
one process and without a broker: the same messages through ``Pipeline.prepare`` back
to back, then with a gap after each, the gap either slept (the core goes idle, or to
another process, as between deliveries) or spun (the core stays ours, busy). If slept gaps
cost much more than spun ones, the extra is the wake-up: caches, TLB and branch state
lost while idle, and on a virtual machine the exit and re-entry of an idle vCPU.
Only the CPU inside ``prepare`` is counted (read before and after each call); the
sleep's own CPU is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken"))

from bench import _proc  # noqa: E402
from bench._data import load_texts, unique_texts  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _cpu_per_call(
    fn: Callable[[], None], gap: Callable[[float], None] | None, gap_s: float, count: int
) -> tuple[float, float]:
    """CPU seconds per ``fn()`` call, and per gap, when each call is followed by a gap."""
    clock = time.process_time
    in_fn = in_gap = 0.0
    for _ in range(count):
        t0 = clock()
        fn()
        t1 = clock()
        if gap is not None:
            gap(gap_s)
        in_fn += t1 - t0
        in_gap += clock() - t1
    return in_fn / count, in_gap / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--gaps", default="0.5,2,10", help="gaps after each message, ms")
    args = p.parse_args()

    from worker.pipeline import build_pipeline
    from worker.settings import Settings
    from worker.validate import Envelope

    bodies = [
        json.dumps({"id": f"m{i}", "text": text}).encode()
        for i, text in enumerate(unique_texts(load_texts(), args.messages * 2))
    ]
    pipeline = build_pipeline(Settings())
    feed = iter(bodies)

    def one() -> None:
        pipeline.prepare(
            Envelope(body=next(feed), content_type="application/json", content_encoding="utf-8")
        )

    print(f"machine speed: {_proc.python_speed():.1f} ns per iteration of a fixed Python loop")
    for _ in range(200):  # warm: lazy tables, caches of the normaliser and tokenizer
        one()
    n = args.messages // 4
    clock_cost, _ = _cpu_per_call(lambda: None, None, 0.0, n)
    feed = iter(bodies)
    tight = _cpu_per_call(one, None, 0.0, n)[0] - clock_cost
    print(f"Pipeline.prepare back to back: {tight * 1e6:7.1f} us CPU per message")
    for gap_ms in (float(g) for g in args.gaps.split(",")):
        for name, gap in (("slept", time.sleep), ("spun", _spin)):
            feed = iter(bodies)
            per_msg, per_gap = _cpu_per_call(one, gap, gap_ms / 1000, n)
            per_msg -= clock_cost
            extra = f"; the sleep itself {per_gap * 1e6:.1f} us" if name == "slept" else ""
            print(
                f"  {gap_ms:4g} ms {name} after each: {per_msg * 1e6:7.1f} us per message "
                f"({per_msg / tight:4.1f}x{extra})"
            )


if __name__ == "__main__":
    main()
