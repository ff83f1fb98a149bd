"""The simulated LLM as a command: ``python -m worker.testing.fake_llm --port N``, a flag
for each timing and limit setting, ``--instant`` for no timing at all."""

from __future__ import annotations

import argparse
import gc

from worker.testing import fake_llm
from worker.testing.fake_llm import _SETTINGS, ERROR_STYLES, TIMINGS, FakeLLM, FakeLLMState

# The CLI's flags besides --port and --timing: --<setting>, defaults FakeLLMState's.
_FLAGS = {
    "ttft_ms": "real: median time to first token", "ttft_sigma": "real: its lognormal sigma",
    "token_ms": "real: per output token", "prefill_ms_per_1k": "real: per 1,000 prompt tokens",
    "latency_ms": "fixed: per reply", "jitter_ms": "fixed: +- uniform",
    "rpm": "requests per minute (0: no limit)", "tpm": "tokens per minute (0: no limit)",
    "slots": "requests generating at once (0: no limit)", "context_tokens": "context size",
    "error_style": "of the context-size 400", "seed": "of the random draws",
}  # fmt: skip
_CLI_DEFAULTS = {"latency_ms": 300.0, "jitter_ms": 50.0}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=fake_llm.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--timing", choices=TIMINGS, default="real")
    parser.add_argument("--instant", action="store_true", help="the same as --timing instant")
    parser.add_argument("--fixed-latency-ms", type=float, help="--timing fixed --latency-ms X")
    defaults = FakeLLMState()
    for name, help_ in _FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=_SETTINGS[name],
            default=_CLI_DEFAULTS.get(name, getattr(defaults, name)),
            choices=ERROR_STYLES if name == "error_style" else None,
            help=help_ + " (default: %(default)s)",
        )
    args = parser.parse_args()
    settings = {name: getattr(args, name) for name in _FLAGS}
    settings["timing"] = "instant" if args.instant else args.timing
    if args.fixed_latency_ms is not None:
        settings.update(timing="fixed", latency_ms=args.fixed_latency_ms)
    server = FakeLLM(args.port, **settings)
    print(f"fake LLM on {server.base_url} ({settings['timing']} timing)", flush=True)
    # as the worker does (worker._heap): no full-collection pauses in the stand-in for a
    # remote API, which a benchmark would count as the worker's added latency
    gc.collect()
    gc.freeze()
    server._server.serve_forever()
