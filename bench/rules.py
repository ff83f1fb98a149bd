"""Rules-stage speed on one core: a 2,000-term policy against the samples-1680 texts.

    python bench/rules.py [--terms 2000] [--rounds 5] [--redis redis://127.0.0.1:6379/0]

Prints messages/s per core (CPU time of this process, so other load on the machine
does not count against it) for: the raw-text prescreen alone and the share of texts it
clears; normalisation alone; the automaton + regexes on precomputed canonical views;
the whole stage as the worker runs it, with and without the prescreen; how the cost
splits between ASCII and non-ASCII texts; and language detection: alone, as the rules
stage asks for it (only for a text a rule could match), and for every text. The same
for chat-length texts (Multilingual HateCheck's, 51 characters on average), where
samples-1680's are long (654) and one in six carries profanity. Then the shipped
policy's signal rules on authored requests, and the counters' Redis round trip per
group of arrivals (1, 10, 100 messages) on the machine's Redis.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._data import load_chat_texts, load_texts  # noqa: E402
from bench._proc import python_speed  # noqa: E402
from worker import _disk_cache  # noqa: E402
from worker._policy_file import parse_policy  # noqa: E402
from worker.language import LanguageDetector, LazyLanguage  # noqa: E402
from worker.models import Action, Author, ModerationRequest  # noqa: E402
from worker.normalise import views, warm_up  # noqa: E402
from worker.policy import Policy  # noqa: E402
from worker.rules import RulesEngine  # noqa: E402
from worker.signals import Message, SignalCounter, Signals  # noqa: E402

DEFAULT = ROOT / "worker" / "policies" / "default.yaml"


def big_policy(terms: int, seed: int = 7) -> str:
    """The default policy plus generated rules up to ``terms`` patterns in all.

    The extra terms are made-up words and two-word phrases (no wordlist is shipped), so
    the automaton has the size of a large real policy while hits stay as rare as real
    abuse terms are in ordinary text.
    """
    rng = random.Random(seed)
    syllables = [
        "ka",
        "zor",
        "mib",
        "tul",
        "vex",
        "dra",
        "qon",
        "pli",
        "ush",
        "gre",
        "fyn",
        "bax",
        "sto",
        "wre",
        "jat",
        "olm",
        "cri",
        "nub",
        "yel",
        "har",
    ]
    policy = yaml.safe_load(DEFAULT.read_text())
    existing = sum(len(r.get("words", [])) + len(r.get("regex", [])) for r in policy["rules"])
    words: set[str] = set()
    while len(words) < max(terms - existing, 0):
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.3:
            word += " " + "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        words.add(word)
    ordered = sorted(words)
    chunk = 100
    for n in range(0, len(ordered), chunk):
        policy["rules"].append(
            {
                "id": f"bench.generated-{n // chunk}",
                "action": "review",
                "words": ordered[n : n + chunk],
            }
        )
    return yaml.safe_dump(policy)


def rates(rows: list[tuple[str, list[str], Any]], rounds: int) -> None:
    """msg/s per row from CPU time. Rounds are interleaved (every row once per round), so
    that the machine's drift during the run (this VM's speed changes within minutes)
    falls on every row alike instead of on whichever ran last."""
    samples: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    for _ in range(rounds):
        for label, texts, fn in rows:
            started = time.process_time()
            for text in texts:
                fn(text)
            samples[label].append(len(texts) / (time.process_time() - started))
    for label, values in samples.items():
        best, median = max(values), statistics.median(values)
        print(
            f"{label:44s} {median:10,.0f} msg/s median  {best:10,.0f} best  "
            f"({1e6 / median:6.1f} us/msg)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terms", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="for the counters")
    args = parser.parse_args()
    texts = load_texts(shuffled=False)
    print(
        f"machine speed: {python_speed():.1f} ns per iteration of a fixed Python loop "
        "(lower is faster; compare runs by it)"
    )
    policy = parse_policy(big_policy(args.terms), "bench")
    warm_up()
    with tempfile.TemporaryDirectory() as cache:  # as the worker starts: cold, then warm
        _disk_cache.configure(Path(cache))
        started = time.perf_counter()
        engine = RulesEngine(policy)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        RulesEngine(policy)
        warm = time.perf_counter() - started
        _disk_cache.configure(None)
        # the same policy with the profanity rule set off, to show what that layer costs
        without = RulesEngine(policy, parse_policy("disable: ['profanity.*']", "off"))
    print(
        f"policy compiled in {cold:.1f} s cold, {warm:.2f} s with its databases cached "
        "(MODERATION_CACHE_DIR)"
    )
    full = copy.copy(engine)
    full._prescreen = None  # the same engine, every text down the full path
    patterns = sum(len(r.words) + len(r.regex) for r in engine.rules)
    print(
        f"policy: {len(engine.rules)} rules, {patterns} terms/phrases/regexes; "
        f"{len(texts)} texts, mean {statistics.mean(map(len, texts)):.0f} chars"
    )
    ascii_texts = [t for t in texts if t.isascii()]
    other = [t for t in texts if not t.isascii()]
    precomputed = {t: views(t, squeeze=False) for t in texts}
    fired = sum(1 for t in texts if engine.match(t).matches)
    print(
        f"texts with a rule match: {fired} ({fired / len(texts):.1%}); "
        f"ASCII {len(ascii_texts)}, non-ASCII {len(other)}"
    )
    fired_without = sum(1 for t in texts if without.match(t).matches)
    print(f"  ... with the profanity rule set off: {fired_without / len(texts):.1%} match")
    started = time.perf_counter()
    detector = LanguageDetector()
    print(f"language model loaded in {time.perf_counter() - started:.2f} s")

    def with_language(text: str) -> Any:
        language = LazyLanguage(text, detector)
        result = engine.match(text, language=language)
        return result, language.code

    rows: list[tuple[str, list[str], Any]] = []
    if engine._prescreen is not None:
        screen = engine._prescreen.could_fire
        cleared = sum(1 for t in texts if not screen(t))
        print(
            f"prescreen clears {cleared} texts ({cleared / len(texts):.1%}); "
            f"the rest take the full path"
        )
        rows.append(("prescreen (Hyperscan on the raw text)", texts, screen))
    else:
        print("prescreen off (no Hyperscan on this platform)")
    rows += [
        ("normalise (canonical views)", texts, lambda t: views(t, squeeze=False)),
        (
            "matcher on canonical views (automaton+regex)",
            texts,
            lambda t: full.match(t, precomputed[t]),
        ),
        ("whole stage, every text the full path", texts, full.match),
        ("whole rules stage (as the worker runs it)", texts, engine.match),
        ("  ... ASCII texts", ascii_texts, engine.match),
        ("  ... non-ASCII texts", other, engine.match),
        ("  ... with the profanity rule set off", texts, without.match),
        ("language detection alone", texts, detector.detect),
        (
            "rules stage + language where rules need it",
            texts,
            lambda t: engine.match(t, language=LazyLanguage(t, detector)),
        ),
        ("rules stage + language for every text", texts, with_language),
    ]
    chat = load_chat_texts()
    if chat:
        fired = sum(1 for t in chat if engine.match(t).matches)
        print(
            f"chat-length texts (Multilingual HateCheck, five languages): {len(chat)}, mean "
            f"{statistics.mean(map(len, chat)):.0f} chars, {fired / len(chat):.1%} with a match"
        )
        rows += [
            ("chat: whole rules stage", chat, engine.match),
            (
                "chat: + language where rules need it",
                chat,
                lambda t: engine.match(t, language=LazyLanguage(t, detector)),
            ),
            ("chat: + language for every text", chat, with_language),
        ]
    rows += signal_rows(engine, texts)
    rates(rows, args.rounds)
    counters_round_trip(args.redis, texts)


def signal_rows(engine: RulesEngine, texts: list[str]) -> list[tuple[str, list[str], Any]]:
    """The shipped policy's signal rules on authored requests, with the counts given
    (as the intake passes them after its per-group round trip): what they add per
    message to the rules stage."""
    policy = Policy.load(DEFAULT)
    rules = policy.for_tenant(None).signals
    rng = random.Random(3)
    requests = {
        t: ModerationRequest(
            id=f"m{n}",
            text=t,
            author=Author(id=f"a{rng.randrange(500)}", account_age_days=rng.choice([1, 30, 400])),
        )
        for n, t in enumerate(texts)
    }
    counts = Signals(messages={10.0: 3}, duplicate_authors=1, violations=0)

    def stage(text: str) -> Any:
        result = engine.match(text)
        decision = rules.evaluate(requests[text], counts, [m.rule_id for m in result.matches])
        return decision.apply(result.action or Action.ALLOW)

    print(f"signal rules (shipped policy): {len(rules.rules)}; counts per group, below")
    return [
        (
            "signal rules alone (counts given)",
            texts,
            lambda t: rules.evaluate(requests[t], counts, []).apply(Action.ALLOW),
        ),
        ("whole rules stage + signal rules", texts, stage),
    ]


def counters_round_trip(url: str, texts: list[str]) -> None:
    """The Redis side: one round trip per group of arrivals, not per message."""
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"counters: no Redis at {url} ({exc}); round trips not measured")
        return
    windows = Policy.load(DEFAULT).windows
    assert windows is not None
    print(f"counters on {url}, windows {windows}:")
    for size in (1, 10, 100):
        prefix = f"bench:rules:{uuid.uuid4().hex[:8]}"
        counter = SignalCounter(client, prefix)
        groups = [
            [
                Message(f"{g}-{i}", "t", f"a{(g * size + i) % 500}", texts[(g * size + i) % 300])
                for i in range(size)
            ]
            for g in range(max(1, 4000 // size))
        ]
        counter.observe(groups[0][:1], windows)  # loads the script
        trips = counter.round_trips
        cpu, wall = time.process_time(), time.perf_counter()
        for group in groups:
            counter.observe(group, windows)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = sum(map(len, groups))
        print(
            f"  group of {size:>3}: {counter.round_trips - trips:>5} round trips for {n} "
            f"messages, {n / wall:>8,.0f} msg/s wall, {cpu / n * 1e6:6.1f} us CPU/msg here"
        )
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


if __name__ == "__main__":
    main()
