"""Author and rate signals end to end: a real worker process, RabbitMQ and a
``redis-server`` of the test's own (killed and restarted in the last test), with the
shipped policy's signal rules (flood, copy-paste wave, new account with a link, repeat
offender)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from worker.client import ModerationClient
from worker.models import Verdict
from worker.settings import Settings
from worker.testing.redis_server import RedisServer

pytestmark = pytest.mark.slow


def _fired(verdict: Verdict) -> list[str]:
    return [s.rule_id for s in verdict.signals]


def _request(rid: str, author: str, text: str, **author_fields: object) -> dict[str, object]:
    return {"id": rid, "text": text, "author": {"id": author, **author_fields}}


def test_flood_wave_new_account_and_repeat_offender_through_the_worker(
    start_worker, client: ModerationClient, redis_server: RedisServer
):
    start_worker(MODERATION_REDIS_URL=redis_server.url)
    tag = uuid.uuid4().hex[:6]
    flooder, calm = f"flooder-{tag}", f"calm-{tag}"
    wave_text = f"check out my new channel everyone, it is great {tag}"
    requests = (
        # one author, 14 messages at once: the 11th on is a flood (more than 10 in 10 s)
        [_request(f"flood-{n}", flooder, f"my lunch today was number {n}") for n in range(14)]
        # one author at the limit, and two authors posting the same text: innocent
        + [_request(f"calm-{n}", calm, f"a quiet thought number {n}") for n in range(10)]
        + [_request(f"pair-{n}", f"pair{n}-{tag}", "see you all at the meetup") for n in range(2)]
        # 30 accounts, one text: from the 20th author on it is a wave
        + [_request(f"wave-{n}", f"raider{n}-{tag}", wave_text) for n in range(30)]
        # a day-old account with a link, and an old one with the same link
        + [_request("new-link", f"new-{tag}", "deals at https://shop.test/x", account_age_days=1)]
        + [_request("old-link", f"old-{tag}", "deals at https://shop.test/x", account_age_days=400)]
    )
    with client.subscribe("#") as verdicts:
        client.publish_many(requests)
        got = {v.id: v for v in verdicts.drain(len(requests), timeout=60)}
        # a repeat offender: three flagged messages, one after another (the history is
        # written when a verdict is decided, so each waits for the one before)
        offender = f"offender-{tag}"
        for n in range(3):
            client.publish(_request(f"rude-{n}", offender, f"shit, I missed bus number {n}"))
            got.update({v.id: v for v in verdicts.drain(1, timeout=30)})
    assert len(got) == len(requests) + 3

    flood = [got[f"flood-{n}"] for n in range(14)]
    assert [_fired(v) for v in flood] == [[]] * 10 + [["signals.flood"]] * 4
    assert all(v.action == "flag" and v.author_id == flooder for v in flood[10:])
    assert flood[10].signals[0].observed == {"messages_10s": 11}
    assert flood[10].signals[0].reason and "flood" in flood[10].signals[0].reason
    assert all(got[f"calm-{n}"].signals == [] for n in range(10))
    assert all(got[f"pair-{n}"].signals == [] for n in range(2))

    wave = [got[f"wave-{n}"] for n in range(30)]
    assert [_fired(v) for v in wave] == [[]] * 19 + [["signals.wave"]] * 11
    assert all(v.action == "review" for v in wave[19:])
    assert {v.action for v in wave[:19]} == {"allow"}

    assert _fired(got["new-link"]) == ["signals.new_account_link"]
    assert got["new-link"].action == "flag"
    assert got["old-link"].signals == [] and got["old-link"].action == "allow"

    rude = [got[f"rude-{n}"] for n in range(3)]
    assert [v.action for v in rude] == ["flag", "flag", "review"]
    assert _fired(rude[2]) == ["signals.repeat_offender"]
    assert rude[2].signals[0].observed == {"violations_24h": 3}
    assert not any(v.signals_unavailable for v in got.values())


def test_redis_lost_mid_run_loses_and_stalls_nothing(
    start_worker, client: ModerationClient, redis_server: RedisServer, broker_url: str
):
    start_worker(MODERATION_REDIS_URL=redis_server.url)
    tag = uuid.uuid4().hex[:6]
    total = 400
    sent: dict[str, float] = {}

    def produce() -> None:  # about 40 messages a second for 10 s, from 20 authors
        with ModerationClient(broker_url, Settings(broker_url=broker_url)) as producer:
            for n in range(total):
                rid = f"r-{n}"
                sent[rid] = time.monotonic()
                producer.publish(_request(rid, f"a{n % 20}-{tag}", f"note {n} about the match"))
                time.sleep(0.025)

    with client.subscribe("#") as verdicts:
        thread = threading.Thread(target=produce)
        thread.start()
        time.sleep(2.0)
        redis_server.kill()
        down_at = time.monotonic()
        time.sleep(3.0)
        redis_server.start()
        up_at = time.monotonic()
        thread.join()
        got = verdicts.drain(total, timeout=60)
    by_id = {v.id: v for v in got}
    assert set(by_id) == set(sent), f"lost: {sorted(set(sent) - set(by_id))[:10]}"
    unavailable = sorted(sent[i] for i, v in by_id.items() if v.signals_unavailable)
    assert unavailable, "no verdict said the signals were unavailable"
    # absent from the kill until the counters' retry interval after the restart
    assert down_at - 0.5 <= unavailable[0] and unavailable[-1] <= up_at + 6.0
    last = [by_id[f"r-{n}"] for n in range(total - 20, total)]
    assert not any(v.signals_unavailable for v in last), "the counters did not come back"
    # nothing waited on the dead server: every verdict came within seconds
    assert max(v.latency_ms for v in got) < 5_000
