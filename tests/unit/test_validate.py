from __future__ import annotations

import json

import pytest

from worker.settings import Settings
from worker.validate import DeadReason, Envelope, InvalidMessage, validate

SETTINGS = Settings(max_body_bytes=10_000, max_text_chars=1_000, max_metadata_bytes=500)


def reason(body: bytes, **kw: str) -> DeadReason:
    with pytest.raises(InvalidMessage) as err:
        validate(Envelope(body, **kw), SETTINGS)
    assert err.value.detail
    return err.value.reason


def test_a_valid_request_round_trips():
    request = validate(
        Envelope(
            b'{"id": "a", "text": "hi", "tenant": "t", "context": "c", '
            b'"metadata": {"k": [1, {"x": null}]}}'
        ),
        SETTINGS,
    )
    assert (request.id, request.text, request.tenant, request.context) == ("a", "hi", "t", "c")
    assert request.metadata == {"k": [1, {"x": None}]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"x" * 10_001, DeadReason.TOO_LARGE),
        (b"\xc3\x28", DeadReason.INVALID_UTF8),
        (b"{", DeadReason.INVALID_JSON),
        (b'{"id": "a", "text": "b", "n": Infinity}', DeadReason.INVALID_JSON),
        (b'{"id": "a", "text": "b", "text": "c"}', DeadReason.INVALID_JSON),
        (b"[" * 5000 + b"]" * 5000, DeadReason.TOO_DEEP),
        (b"42", DeadReason.NOT_OBJECT),
        (b'{"id": "", "text": "b"}', DeadReason.INVALID_FIELDS),
        (b'{"id": "a", "text": 5}', DeadReason.INVALID_FIELDS),
        (b'{"id": "a", "text": "b", "tenant": 3}', DeadReason.INVALID_FIELDS),
        (b'{"id": "a", "text": "b", "other": 3}', DeadReason.INVALID_FIELDS),
        (json.dumps({"id": "a", "text": "b" * 1001}).encode(), DeadReason.TEXT_TOO_LONG),
        (
            json.dumps({"id": "a", "text": "b", "metadata": {"m": "x" * 600}}).encode(),
            DeadReason.METADATA_TOO_LARGE,
        ),
        (b'{"id": "a", "text": "\\udc00"}', DeadReason.INVALID_UNICODE),
        (b'{"id": "a\\ud800", "text": "b"}', DeadReason.INVALID_UNICODE),
        (b'{"id": "a", "text": "b", "metadata": {"n": 1e400}}', DeadReason.INVALID_JSON),
    ],
)
def test_bad_input_gets_a_reason(body: bytes, expected: DeadReason):
    assert reason(body) == expected


def test_compressed_bodies_are_refused_not_guessed():
    assert reason(b'{"id": "a", "text": "b"}', content_encoding="gzip") == (
        DeadReason.UNSUPPORTED_ENCODING
    )


def test_errors_never_echo_the_text():
    with pytest.raises(InvalidMessage) as err:
        validate(Envelope(b'{"id": 1, "text": "secret user words"}'), SETTINGS)
    assert "secret" not in str(err.value)


BOUND = Settings(tenant_users={"shop-app": ["shop", "shop-eu"], "ops": ["*"]})


def _bound(body: bytes, user_id: str | None) -> str | None:
    return validate(Envelope(body, user_id=user_id), BOUND).tenant


def _refused(body: bytes, user_id: str | None) -> str:
    with pytest.raises(InvalidMessage) as err:
        validate(Envelope(body, user_id=user_id), BOUND)
    assert err.value.reason == DeadReason.TENANT_NOT_ALLOWED
    return err.value.detail


def test_a_bound_tenant_comes_from_the_broker_user():
    assert _bound(b'{"id": "a", "text": "hi", "tenant": "shop-eu"}', "shop-app") == "shop-eu"
    assert _bound(b'{"id": "a", "text": "hi"}', "shop-app") == "shop"  # its first
    assert _bound(b'{"id": "a", "text": "hi", "tenant": "forum"}', "ops") == "forum"
    assert _bound(b'{"id": "a", "text": "hi"}', "ops") is None  # "*": the base policy
    assert "'forum'" in _refused(b'{"id": "a", "text": "hi", "tenant": "forum"}', "shop-app")
    assert "no user_id" in _refused(b'{"id": "a", "text": "hi", "tenant": "shop"}', None)
    assert "'stranger'" in _refused(b'{"id": "a", "text": "hi"}', "stranger")
    # unbound (the default): the request's tenant is trusted, user or not
    assert validate(Envelope(b'{"id": "a", "text": "hi", "tenant": "x"}'), SETTINGS).tenant == "x"
