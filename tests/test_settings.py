"""Settings from the environment: one clear line for each missing or malformed value."""

from __future__ import annotations

import pytest

from bot.db.engine import async_url
from bot.errors import ConfigError
from bot.settings import Settings, load_settings

ENV = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "PORT",
    "DATABASE_URL",
    "SLACK_API_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.port == 3000
    assert s.slack_api_base == "https://slack.com/api/"
    assert s.database_url.startswith("sqlite+aiosqlite:///")


def test_slack_api_url_gets_its_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    assert load_settings().slack_api_base == "http://127.0.0.1:9/api/"


def test_missing_token_names_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings().require("slack_bot_token")
    assert str(caught.value) == (
        "SLACK_BOT_TOKEN is not set: "
        "expected the bot token from the Slack app's OAuth page (xoxb-...)"
    )


def test_malformed_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-user-token")
    with pytest.raises(ConfigError, match=r"^SLACK_BOT_TOKEN does not start with xoxb-: expected"):
        load_settings()


def test_malformed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(ConfigError, match=r"^PORT .*: expected a TCP port number from 1 to 65535$"):
        load_settings()


def test_app_token_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-wrong-kind")
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN does not start with xapp-"):
        load_settings()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgres://u:p@db.example.com:5432/bot",
            "postgresql+asyncpg://u:p@db.example.com:5432/bot",
        ),
        ("postgresql://u@h/bot", "postgresql+asyncpg://u@h/bot"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls(given: str, used: str) -> None:
    assert async_url(given) == used


@pytest.mark.parametrize("given", ["not a url", "mysql://u@h/db"])
def test_bad_database_url(given: str) -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_URL"):
        async_url(given)


def test_settings_are_a_plain_model() -> None:
    s = Settings(slack_bot_token="xoxb-1", slack_signing_secret="s")
    s.require("slack_bot_token", "slack_signing_secret")


def test_half_set_cloudflare_names_what_is_missing() -> None:
    s = Settings(cloudflare_api_token="t", cloudflare_account_id="a")
    with pytest.raises(
        ConfigError, match=r"^CLOUDFLARE_ZONE_ID is not set: expected the 32-character"
    ):
        _ = s.cloudflare_configured


def test_global_key_in_the_environment_is_refused() -> None:
    s = Settings(
        cloudflare_api_token="t",
        cloudflare_account_id="a",
        cloudflare_zone_id="z",
        cloudflare_email="x@y",
    )
    with pytest.raises(ConfigError, match="CLOUDFLARE_EMAIL is set: unset it"):
        _ = s.cloudflare_configured
    assert Settings().cloudflare_configured is False
