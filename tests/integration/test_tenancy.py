"""Tenants bound to broker users (``MODERATION_TENANT_USERS``), with two real RabbitMQ
users whose permissions are the ones the README documents for producers."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import amqp
import pytest

from worker.settings import Settings
from worker.testing.amqp import VerdictCollector, rabbitmqctl

from ._faults import Collector

pytestmark = pytest.mark.slow


def _user(vhost: str, name: str, tenant: str) -> None:
    """A producer of one tenant, as the README sets one up."""
    rabbitmqctl("add_user", name, "pw")
    rabbitmqctl(
        "set_permissions",
        "-p",
        vhost,
        name,
        rf"^{tenant}\.",  # configure: its own queues
        rf"^(moderation\.requests|{tenant}\..*)$",  # write: the requests exchange, its queues
        rf"^(moderation\.verdicts|{tenant}\..*)$",  # read: the verdicts exchange, its queues
    )
    # and of the verdicts, only its tenant's routing keys (checked when it binds)
    rabbitmqctl(
        "set_topic_permissions", "-p", vhost, name, "moderation.verdicts", "^$", rf"^{tenant}\."
    )


@pytest.fixture
def users(vhost: str) -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    shop, forum = f"shop-app-{tag}", f"forum-app-{tag}"
    _user(vhost, shop, "shop")
    _user(vhost, forum, "forum")
    try:
        yield shop, forum
    finally:
        for name in (shop, forum):
            rabbitmqctl("delete_user", name, check=False)


def _connect(vhost: str, user: str) -> amqp.Connection:
    connection = amqp.Connection(
        host="127.0.0.1:5672", userid=user, password="pw", virtual_host=vhost
    )
    connection.connect()
    return connection


def _publish(channel: amqp.Channel, body: dict, user_id: str | None, exchange: str) -> None:
    properties = {"user_id": user_id} if user_id else {}
    channel.basic_publish(
        amqp.Message(
            json.dumps(body), content_type="application/json", delivery_mode=2, **properties
        ),
        exchange=exchange,
        routing_key="moderation.requests",
    )


def test_a_producer_cannot_use_another_tenants_policy_or_read_its_verdicts(
    start_worker, users, vhost: str, broker_url: str
):
    shop, forum = users
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_worker(
        MODERATION_TENANT_USERS=json.dumps({shop: ["shop"], forum: ["forum"]}),
        # a small LLM stage, so some requests go through moderation.deferred, where the
        # worker, not the producer, is the publisher RabbitMQ saw
        MODERATION_LLM_MAX_PENDING="1",
        MODERATION_METRICS_PORT=str(port),
    )
    collector: Collector = VerdictCollector(broker_url, Settings(broker_url=broker_url)).start()
    try:
        # the forum's producer reads its own verdicts: it may bind forum.# and nothing else
        reader = _connect(vhost, forum)
        inbox = reader.channel()
        inbox.queue_declare("forum.verdicts", durable=False, auto_delete=True)
        inbox.queue_bind("forum.verdicts", "moderation.verdicts", "forum.#")
        refused = reader.channel()
        refused.queue_declare("forum.snoop", durable=False, auto_delete=True)
        with pytest.raises(amqp.exceptions.AccessRefused):
            refused.queue_bind("forum.snoop", "moderation.verdicts", "shop.#")

        producer = _connect(vhost, shop)
        channel = producer.channel()
        _publish(
            channel, {"id": "own", "text": "kys", "tenant": "shop"}, shop, "moderation.requests"
        )
        _publish(channel, {"id": "implied", "text": "kys"}, shop, "moderation.requests")
        _publish(
            channel, {"id": "spoof", "text": "kys", "tenant": "forum"}, shop, "moderation.requests"
        )
        _publish(
            channel,
            {"id": "anonymous", "text": "kys", "tenant": "shop"},
            None,
            "moderation.requests",
        )
        # claiming another login is refused by the broker itself
        liar = _connect(vhost, forum).channel()
        _publish(
            liar, {"id": "forged", "text": "kys", "tenant": "shop"}, shop, "moderation.requests"
        )
        with pytest.raises(amqp.exceptions.PreconditionFailed):
            liar.basic_qos(0, 1, False)  # a round trip: the broker's answer to the publish
        # and the default exchange, which reaches every queue, is not the producer's to use
        sneaky = _connect(vhost, shop).channel()
        _publish(sneaky, {"id": "default-exchange", "text": "kys"}, shop, "")
        with pytest.raises(amqp.exceptions.AccessRefused):
            sneaky.basic_qos(0, 1, False)
        waiting = {f"llm-{n}" for n in range(40)}
        for n in range(40):
            body = {"id": f"llm-{n}", "text": f"an ordinary message number {n}"}
            _publish(channel, body, shop, "moderation.requests")
        # a forum request, which the forum's producer sees
        forum_channel = _connect(vhost, forum).channel()
        _publish(forum_channel, {"id": "theirs", "text": "kys"}, forum, "moderation.requests")

        collector.wait_for({"own", "implied", "spoof", "anonymous", "theirs"} | waiting, 60)
        verdicts = {v.id: v for v in collector.verdicts}
        assert {verdicts[i].tenant for i in waiting} == {"shop"}
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        deferred = re.search(r"^moderation_deferred_total (\S+)", metrics, re.M)
        assert deferred and float(deferred.group(1)) > 0, "nothing went through the deferred queue"
        assert verdicts["own"].tenant == "shop" and verdicts["own"].action == "block"
        assert verdicts["implied"].tenant == "shop"
        assert verdicts["theirs"].tenant == "forum"
        dead = collector.dead_by_id()
        assert {d.reason for d in dead["spoof"]} == {"tenant_not_allowed"}
        assert {d.reason for d in dead["anonymous"]} == {"tenant_not_allowed"}
        assert "forged" not in verdicts and "forged" not in dead
        assert "default-exchange" not in verdicts and "default-exchange" not in dead

        seen = []
        inbox.basic_consume("forum.verdicts", callback=seen.append, no_ack=True)
        while True:
            try:
                reader.drain_events(timeout=2)
            except TimeoutError:
                break
        assert [json.loads(m.body)["id"] for m in seen] == ["theirs"]
        assert seen[0].delivery_info["routing_key"].startswith("forum.block.")
    finally:
        collector.stop()
