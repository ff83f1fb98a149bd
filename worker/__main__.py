"""Command line: ``python -m worker <command>``.

moderate [FILE]   run the pipeline in-process on JSON Lines (stdin by default)
schemas [--check] write (or check) schemas/*.json from the models
health            exit 0 when this pod's worker is alive (for probes)
db upgrade|status the review store's schema (MODERATION_DATABASE_URL)
review-store      write review items and decisions to the store (its own process)
review-ui         the review page for moderators (MODERATION_REVIEW_LOGINS)
warm              compile the policy into MODERATION_CACHE_DIR ahead of a start
eval DATASET      precision/recall of the pipeline on a labelled set
bench             the throughput and token benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _moderate(args: argparse.Namespace) -> int:
    from worker import _output
    from worker._logging import configure
    from worker.pipeline import build_pipeline
    from worker.settings import get_settings
    from worker.validate import Envelope

    started = time.perf_counter()
    fmt = args.format or _output.default_format(sys.stdout)
    settings = get_settings()
    configure(settings.log_level)
    if not settings.llm_enabled:
        print(
            "moderate: LLM stage is OFF (set OPENAI_API_KEY or OPENAI_BASE_URL to enable it); "
            "what the rules cannot decide gets the fallback action "
            f"({(settings.fallback_action or 'review')!s}, source=fallback)",
            file=sys.stderr,
        )
    pipeline = build_pipeline(settings)
    if args.file in (None, "-"):
        lines = [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    else:
        lines = Path(args.file).read_bytes().splitlines()
    envelopes = [Envelope(body=line) for line in lines if line.strip()]
    numbers = [n for n, line in enumerate(lines, 1) if line.strip()]
    with _progress(len(envelopes), "moderate", args.progress) as progress:
        outcomes = pipeline.run(envelopes, progress)
    summary = _output.Summary.of(
        outcomes, llm_enabled=settings.llm_enabled, wall_s=_since_launch(started)
    )
    numbered = list(zip(numbers, outcomes, strict=True))
    _output.write(fmt, numbered, summary, out=sys.stdout, err=sys.stderr)
    return 0


def _since_launch(fallback_start: float) -> float:
    """Seconds since this process started (imports and all, as a user waits for it);
    on a system without /proc, since ``fallback_start`` (``perf_counter``)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        started_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - fallback_start


class _Progress:
    """A progress bar on stderr (tqdm) for long inputs; nothing for short ones."""

    def __init__(self, total: int, label: str, show: bool | None) -> None:
        self._bar: Any = None
        if show or (show is None and total >= _PROGRESS_FROM):
            from tqdm import tqdm

            # disable=None: shown on a terminal, silent when stderr is a file or a pipe,
            # unless asked for explicitly
            self._bar = tqdm(
                total=total,
                desc=label,
                unit="msg",
                file=sys.stderr,
                disable=None if show is None else not show,
                leave=False,
            )

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


_PROGRESS_FROM = 200  # messages: shorter inputs finish before a bar would help


def _progress(total: int, label: str, show: bool | None) -> _Progress:
    return _Progress(total, label, show)


def _schemas(args: argparse.Namespace) -> int:
    from worker.schemas import check_schemas, write_schemas

    if args.check:
        stale = check_schemas(Path(args.dir))
        for name in stale:
            print(f"schemas: {name} is out of date; run python -m worker schemas", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(Path(args.dir)):
        print(path)
    return 0


def _health(args: argparse.Namespace) -> int:
    from worker.settings import get_settings

    path = get_settings().health_file
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        print(f"health: {path} missing: worker not running", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"health: last heartbeat {age:.0f}s ago", file=sys.stderr)
        return 1
    return 0


def _warm(args: argparse.Namespace) -> int:
    """Compile the policy into the cache directory, so that starts which find it there
    (an image layer, a volume an init container filled) skip the compile."""
    from worker import _disk_cache
    from worker._logging import configure
    from worker._policy_store import PolicyStore
    from worker.settings import get_settings

    configure(get_settings().log_level)
    settings = get_settings()
    if settings.cache_dir is None:
        print("warm: MODERATION_CACHE_DIR is empty: nothing to fill", file=sys.stderr)
        return 1
    _disk_cache.configure(settings.cache_dir)
    started = time.perf_counter()
    PolicyStore(settings.policy, check_every_s=0)
    files = sorted(settings.cache_dir.glob("*.bin"))
    size = sum(f.stat().st_size for f in files)
    print(
        f"warm: {settings.policy} compiled in {time.perf_counter() - started:.1f} s; "
        f"{settings.cache_dir}: {len(files)} files, {size / 1e6:.1f} MB"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from worker._logging import configure
    from worker.evaluate import evaluate_samples, load, render, render_sweep, sweep
    from worker.pipeline import build_pipeline
    from worker.settings import Settings

    if args.plot:
        if args.batch_size:
            print("eval: --plot does not combine with --batch-size", file=sys.stderr)
            return 2
        from worker._eval_plot import PlotUnavailable, require_matplotlib

        try:  # before the run, not after minutes of it
            require_matplotlib()
        except PlotUnavailable as exc:
            print(f"eval: {exc}", file=sys.stderr)
            return 2
    overrides = {"openai_base_url": None, "openai_api_key": None} if args.rules_only else {}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure("WARNING")
    samples = [sample for dataset in args.dataset for sample in load(Path(dataset))]
    if args.from_reviews:
        from worker.evaluate import from_reviews

        if not settings.database_url:
            print("eval: --from-reviews needs MODERATION_DATABASE_URL", file=sys.stderr)
            return 2
        samples += from_reviews(settings.database_url)
    if not samples:
        print("eval: no samples (give a dataset or --from-reviews)", file=sys.stderr)
        return 2
    if args.limit:
        samples = samples[: args.limit]
    if args.batch_size:
        sizes = [int(n) for n in args.batch_size.split(",") if n.strip()]

        def at(size: int) -> Any:  # a fresh pipeline: no cache shared between sizes
            return build_pipeline(settings.model_copy(update={"redis_url": None}))

        with _progress(len(samples) * len(sizes), "eval", args.progress) as progress:
            rows = sweep(at, samples, sizes, progress)
        print(render_sweep(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    with _progress(len(samples), "eval", args.progress) as progress:
        evaluation = evaluate_samples(build_pipeline(settings), samples, progress)
    report = evaluation.report
    report["llm"] = settings.llm_enabled
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        from worker._eval_plot import write_plots

        directory = Path(args.plot)
        name = ", ".join(Path(d).name for d in args.dataset)
        notes = write_plots(report, evaluation.samples, directory, name)
        for note in notes:
            print(f"plot: {note}", file=sys.stderr)
        print(f"plots: {directory / 'report.html'}", file=sys.stderr)
    return 0


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal, long inputs)",
    )


def _db_command(args: argparse.Namespace) -> int:
    from worker import _db
    from worker.settings import get_settings

    url = get_settings().database_url
    if not url:
        print("db: set MODERATION_DATABASE_URL (a PostgreSQL URL)", file=sys.stderr)
        return 2
    if args.action == "upgrade":
        done = _db.upgrade(url)
        print("db: applied " + ", ".join(done) if done else "db: already current")
    have, latest = _db.status(url)
    print(f"db: schema version {have} of {latest}")
    return 0 if have >= latest else 1


def _calibrate(args: argparse.Namespace) -> int:
    from worker.calibrate import calibrate, patch, render
    from worker.models import Action
    from worker.reviews import ReviewStore
    from worker.settings import get_settings

    url = get_settings().database_url
    if not url:
        print("calibrate: set MODERATION_DATABASE_URL (the review store)", file=sys.stderr)
        return 2
    store = ReviewStore(url)
    items = store.decided(args.tenant)
    store.close()
    action = Action(args.action)
    rows = calibrate(items, args.precision, action)
    print(f"{len(items)} decided items")
    print(render(rows, args.precision, action))
    if args.write:
        Path(args.write).write_text(patch(rows, action, args.tenant))
        print(f"policy patch written to {args.write}")
    return 0


def _review_store(args: argparse.Namespace) -> int:
    import signal
    import threading

    from worker import _db
    from worker._logging import configure
    from worker._review_consumer import ReviewConsumer
    from worker.publish import Publisher
    from worker.reviews import Overrides
    from worker.settings import get_settings

    settings = get_settings()
    configure(settings.log_level)
    if not settings.database_url:
        print("review-store: set MODERATION_DATABASE_URL", file=sys.stderr)
        return 2
    try:
        _db.require_current(settings.database_url)
    except _db.DatabaseBehind as exc:
        print(f"review-store: {exc}", file=sys.stderr)
        return 1
    publisher = Publisher(settings, name="review-store-publisher").start()
    consumer = ReviewConsumer(settings, publisher, Overrides()).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    consumer.stop()
    publisher.stop(timeout=5)
    return 0


def _review_ui(args: argparse.Namespace) -> int:
    from worker._logging import configure
    from worker.review_ui import serve
    from worker.settings import get_settings

    settings = get_settings()
    configure(settings.log_level)
    print(f"review-ui: http://{args.host}:{args.port}/", file=sys.stderr)
    serve(settings, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    moderate = commands.add_parser("moderate", help="moderate JSON Lines in-process")
    moderate.add_argument("file", nargs="?", help="JSON Lines file; '-' or nothing: stdin")
    moderate.add_argument(
        "--format",
        choices=["jsonl", "table", "summary"],
        help="jsonl: one verdict per line (dead letters on stderr); table: a row per "
        "message and a summary; summary: the summary only (default: table on a terminal, "
        "jsonl otherwise)",
    )
    _progress_flag(moderate)
    moderate.set_defaults(run=_moderate)
    schemas = commands.add_parser("schemas", help="write schemas/*.json from the models")
    schemas.add_argument("--check", action="store_true", help="exit 1 if they drifted")
    schemas.add_argument("--dir", default=str(Path(__file__).parent.parent / "schemas"))
    schemas.set_defaults(run=_schemas)
    health = commands.add_parser("health", help="exit 0 when the worker is alive")
    health.add_argument("--max-age", type=float, default=30.0)
    health.set_defaults(run=_health)
    db = commands.add_parser("db", help="the review store's schema (MODERATION_DATABASE_URL)")
    db.add_argument("action", choices=["upgrade", "status"])
    db.set_defaults(run=_db_command)
    cal = commands.add_parser("calibrate", help="thresholds from reviewers' decisions")
    cal.add_argument("--precision", type=float, default=0.9, help="target precision")
    cal.add_argument("--action", choices=["block", "review", "flag"], default="block")
    cal.add_argument("--tenant", help="one tenant's decisions (default: all)")
    cal.add_argument("--write", metavar="FILE", help="also write the thresholds as a policy patch")
    cal.set_defaults(run=_calibrate)
    rs = commands.add_parser(
        "review-store", help="write review items and decisions to the store (a process of its own)"
    )
    rs.set_defaults(run=_review_store)
    ui = commands.add_parser("review-ui", help="the review page for moderators")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8090)
    ui.set_defaults(run=_review_ui)
    warm = commands.add_parser(
        "warm", help="compile the policy into MODERATION_CACHE_DIR (image builds, init containers)"
    )
    warm.set_defaults(run=_warm)
    evaluate = commands.add_parser("eval", help="precision/recall on a labelled set")
    evaluate.add_argument(
        "dataset",
        nargs="*",
        help="samples-1680 JSONL(.gz), CSV with text,label, or Multilingual HateCheck CSV(.gz)",
    )
    evaluate.add_argument(
        "--from-reviews",
        action="store_true",
        help="also the review store's decided items, labelled by the reviewers' decisions",
    )
    evaluate.add_argument("--rules-only", action="store_true", help="LLM stage off")
    evaluate.add_argument("--limit", type=int, default=0)
    evaluate.add_argument("--json", help="also write the report as JSON here")
    evaluate.add_argument(
        "--plot",
        metavar="DIR",
        help="also write PR curves, score histograms and report.html here (needs matplotlib)",
    )
    evaluate.add_argument(
        "--batch-size",
        metavar="N,N,...",
        help="compare batch sizes (e.g. 1,8,16,32): accuracy, cost and call latency of each",
    )
    _progress_flag(evaluate)
    evaluate.set_defaults(run=_eval)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
