"""What the signal counters cost: one Redis round trip per batch, as ``worker.signals``
makes it, against the Redis on the machine.

    python bench/signals.py [--messages 20000] [--authors 2000] [--redis redis://127.0.0.1:6379/0]

Prints, per batch size, messages/s through ``SignalCounter.observe`` (wall time: the
round trip is the point), milliseconds per batch, and the CPU time per message of this
process and of the Redis server (from its ``INFO cpu``), then the keys and memory the
run left, against the bound the windows and caps give. Keys are under a prefix of the
run's own and deleted at the end.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import uuid

import redis

from worker.signals import Message, SignalCounter, Windows


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--authors", type=int, default=2_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    rng = random.Random(7)
    texts = [f"message text number {n} with some words" for n in range(args.messages // 4)]
    print(f"{args.messages} messages, {args.authors} authors, {len(texts)} distinct texts")
    print(f"{'batch':>6} {'msg/s':>9} {'ms/batch':>9} {'us/msg here':>12} {'us/msg redis':>13}")
    for size in (1, 10, 50, 100, 500):
        prefix = f"bench:sig:{uuid.uuid4().hex[:8]}"
        counter = SignalCounter(client, prefix)
        windows = Windows(rate_s=(10.0, 60.0))
        batch_count = max(1, args.messages // size)
        batches = [
            [
                Message(
                    id=f"{b}-{i}",
                    tenant="t",
                    author=f"a{rng.randrange(args.authors)}",
                    normalised_text=rng.choice(texts),
                )
                for i in range(size)
            ]
            for b in range(batch_count)
        ]
        counter.observe(batches[0][:1], windows)  # loads the script
        redis_before, own_before = _redis_cpu(client), _own_cpu()
        started = time.perf_counter()
        for batch in batches:
            counter.observe(batch, windows)
        wall = time.perf_counter() - started
        redis_cpu, own_cpu = _redis_cpu(client) - redis_before, _own_cpu() - own_before
        n = batch_count * size
        print(
            f"{size:>6} {n / wall:>9.0f} {wall / batch_count * 1000:>9.2f} "
            f"{own_cpu / n * 1e6:>12.1f} {redis_cpu / n * 1e6:>13.1f}"
        )
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if size == 500:
            members = sum(client.zcard(k) for k in keys)
            memory = sum(client.memory_usage(k) or 0 for k in keys)
            print(
                f"left: {len(keys)} keys, {members} members, {memory / 1e6:.1f} MB "
                f"(~{memory / max(members, 1):.0f} B/member); bound: authors + texts seen "
                f"within the longest window, {windows.cap} members each"
            )
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


if __name__ == "__main__":
    main()
