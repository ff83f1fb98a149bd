"""``<VARIABLE>_FILE`` settings and the broker password put into URLs."""

from __future__ import annotations

import pytest

from worker.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith(("MODERATION_", "OPENAI_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_a_secret_is_read_from_the_file_its_variable_names(clean_env, tmp_path):
    key = tmp_path / "key"
    key.write_text("sk-from-a-file\n")  # as `kubectl create secret` files often end
    clean_env.setenv("OPENAI_API_KEY_FILE", str(key))
    clean_env.setenv("MODERATION_REDIS_URL_FILE", str(tmp_path / "redis"))
    (tmp_path / "redis").write_text("rediss://:pw@cache:6380/0")
    clean_env.setenv("MODERATION_TENANT_USERS_FILE", str(tmp_path / "users"))
    (tmp_path / "users").write_text('{"shop-app": ["shop"]}')
    settings = Settings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-a-file"
    assert settings.redis_url == "rediss://:pw@cache:6380/0"
    assert settings.tenant_users == {"shop-app": ["shop"]}  # JSON, as from the variable
    clean_env.setenv("OPENAI_API_KEY", "sk-explicit")  # the plain variable wins
    assert Settings().openai_api_key.get_secret_value() == "sk-explicit"  # type: ignore[union-attr]


def test_a_missing_file_is_a_clear_error(clean_env, tmp_path):
    clean_env.setenv("OPENAI_API_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"OPENAI_API_KEY_FILE=.*absent"):
        Settings()


def test_the_broker_password_goes_into_every_url(clean_env, tmp_path):
    clean_env.setenv(
        "MODERATION_BROKER_URL", "amqp://worker@a:5672/prod;amqps://worker:old@[::1]:5671/prod"
    )
    (tmp_path / "pw").write_text("s3cr/t:@x\n")
    clean_env.setenv("MODERATION_BROKER_PASSWORD_FILE", str(tmp_path / "pw"))
    assert Settings().broker_url == (
        "amqp://worker:s3cr%2Ft%3A%40x@a:5672/prod;amqps://worker:s3cr%2Ft%3A%40x@[::1]:5671/prod"
    )
    from kombu import Connection

    assert Connection(Settings().broker_url.split(";")[0]).password == "s3cr/t:@x"
