"""CPU per message of each worker stage, in-process, no broker: where the worker's CPU goes.

    python bench/stages.py [--messages 5000] [--batch 16] [--src DIR]

Runs the worker's own functions on the dataset texts (made unique like run.py does) and
reports process CPU time (``time.process_time``) per message for each stage: validate,
normalise (views), rules, the whole ``Pipeline.prepare``, building and serialising the
verdict, the LLM request (openai client against the simulated LLM with 0 ms latency,
per batch and per message) and the broker side (py-amqp publish + receive of one
request-sized and one verdict-sized message, with kombu's Message wrapper).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after --src: the worker comes from there, bench from here

from bench._data import load_texts, unique_texts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--llm-calls", type=int, default=150)
    p.add_argument("--cprofile", action="store_true", help="profile Pipeline.prepare")
    p.add_argument("--src", type=Path, default=ROOT, help="worker source tree to measure")
    args = p.parse_args()
    sys.path.insert(0, str(args.src.resolve()))
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken"))

    port = _free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.testing.fake_llm",
            "--port",
            str(port),
            "--latency-ms",
            "0",
            "--jitter-ms",
            "0",
        ],
        cwd=args.src,
        env={**os.environ, "PYTHONPATH": str(args.src.resolve())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        os.environ["OPENAI_API_KEY"] = "bench-key"
        run(args)
    finally:
        fake.terminate()
        fake.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("fake LLM did not start")


def _cpu(label: str, n: int, fn, results: dict) -> None:  # type: ignore[no-untyped-def]
    fn_start = time.process_time()
    fn()
    spent = time.process_time() - fn_start
    results[label] = spent / n * 1000
    print(f"  {label:<58} {spent / n * 1000:8.4f} ms/msg", flush=True)


def run(args: argparse.Namespace) -> None:
    from worker._logging import configure

    configure("WARNING")  # no per-batch log lines in the measurement
    from worker._prompt import user_message
    from worker.normalise import views
    from worker.pipeline import Pending, build_pipeline
    from worker.publish import verdict_message
    from worker.settings import Settings
    from worker.validate import Envelope, validate

    n = args.messages
    bodies = [
        json.dumps(
            {"metadata": {"t": 1.0}, "id": f"s-{i}", "text": text},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        for i, text in enumerate(unique_texts(load_texts(), n))
    ]
    settings = Settings(cache_size=100_000)
    pipeline = build_pipeline(settings)
    envelopes = [
        Envelope(body=b, content_type="application/json", content_encoding="utf-8") for b in bodies
    ]
    # warm lazy state (tokenizer, automata, char tables) before timing
    for e in envelopes[:50]:
        pipeline.prepare(e)
    results: dict[str, float] = {}
    print(f"worker source: {args.src.resolve()}; {n} messages, batch {args.batch}")
    requests = []
    _cpu(
        "validate (JSON + pydantic)",
        n,
        lambda: requests.extend(validate(e, settings) for e in envelopes),
        results,
    )
    all_views = []
    _cpu("normalise.views", n, lambda: all_views.extend(views(r.text) for r in requests), results)
    engine = pipeline.policies.current.for_tenant(None).engine
    _cpu(
        "rules.match (given views)",
        n,
        lambda: [engine.match(r.text, v) for r, v in zip(requests, all_views, strict=True)],
        results,
    )
    from worker._prompt import truncate
    from worker.cache import cache_key

    _cpu(
        "truncate (tiktoken when len(text) > token_budget)",
        n,
        lambda: [truncate(r.text, settings.token_budget) for r in requests],
        results,
    )
    _cpu(
        "cache_key (blake2b)",
        n,
        lambda: [
            cache_key("m", "v", v[0], r.context) for r, v in zip(requests, all_views, strict=True)
        ],
        results,
    )
    pipeline2 = build_pipeline(settings)
    outcomes: list = []
    _cpu(
        "Pipeline.prepare (all local stages)",
        n,
        lambda: outcomes.extend(pipeline2.prepare(e) for e in envelopes),
        results,
    )
    if args.cprofile:
        import cProfile
        import pstats

        pipeline3 = build_pipeline(settings)
        prof = cProfile.Profile()
        prof.enable()
        for e in envelopes:
            pipeline3.prepare(e)
        prof.disable()
        print("  cProfile of Pipeline.prepare (tottime, top 15):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    pendings = [o for o in outcomes if isinstance(o, Pending)]
    m = len(pendings)
    scores = tuple(0.01 for _ in range(13))
    from worker.models import Source, Usage

    verdicts = []
    # VerdictBuilder.scored; Pipeline._scored_verdict in trees from before it (A/B --src)
    builder = getattr(pipeline2, "verdicts", None)
    scored = builder.scored if builder is not None else pipeline2._scored_verdict
    _cpu(
        "verdict: building a scored verdict",
        m,
        lambda: verdicts.extend(
            scored(pd, scores, Source.LLM, Usage(), 0.0, "gpt-4o-mini") for pd in pendings
        ),
        results,
    )
    _cpu(
        "verdict: verdict_message (model_dump_json, routing key)",
        m,
        lambda: [verdict_message(v, settings) for v in verdicts],
        results,
    )
    batches = [pendings[i : i + args.batch] for i in range(0, len(pendings), args.batch)]
    _cpu(
        "user_message (prompt lines) per message",
        m,
        lambda: [user_message([(p.llm_text, p.request.context) for p in b]) for b in batches],
        results,
    )
    classifier = pipeline2.classifier
    assert classifier is not None
    calls = batches[: args.llm_calls]
    items = [[(p.llm_text, p.request.context) for p in b] for b in calls]
    classifier.classify(items[0])  # connect
    start = time.process_time()
    for it in items:
        classifier.classify(it)
    spent = time.process_time() - start
    per_call = spent / len(items) * 1000
    results["llm call (openai client + parse), per call"] = per_call
    results["llm call, per message"] = per_call / args.batch
    print(f"  {'llm call (openai client + parse_reply), per call':<58} {per_call:8.4f} ms/call")
    print(
        f"  {'llm call, per message (batch ' + str(args.batch) + ')':<58} "
        f"{per_call / args.batch:8.4f} ms/msg"
    )
    complete_batches = batches[args.llm_calls : args.llm_calls * 2] or batches
    cnt = sum(len(b) for b in complete_batches)
    _cpu(
        "Pipeline.complete (cache + LLM + verdicts), per message",
        cnt,
        lambda: [pipeline2.complete(b) for b in complete_batches],
        results,
    )
    print("(process CPU time of this process only; the simulated LLM runs in its own)")


if __name__ == "__main__":
    main()
