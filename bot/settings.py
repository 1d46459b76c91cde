"""Settings from the environment, validated at start: one clear line per problem, then stop."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

SLACK_API_URL = "https://slack.com/api/"
# Channel ids: C... public, G... private (older); what a person types is a #name.
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
# "the 32 character Integration Key" (https://developer.pagerduty.com/docs/send-alert-event)
_ROUTING_KEY = re.compile(r"[A-Za-z0-9]{32}")

# What each setting should hold, for the line shown when it is missing or malformed.
_EXPECTED = {
    "slack_bot_token": "the bot token from the Slack app's OAuth page (xoxb-...)",
    "slack_signing_secret": "the signing secret from the Slack app's Basic Information page",
    "slack_app_token": "an app-level token with connections:write (xapp-...)",
    "slack_api_url": "an http(s) URL ending in /api/ (default https://slack.com/api/)",
    "slack_channel": "the alert channel's id, C... or G... (e.g. C0123456789): in Slack, click the "
    "channel's name at the top of the channel; the Channel ID is at the bottom of the About tab",
    "database_url": "a SQLAlchemy URL: sqlite+aiosqlite:///file.db or postgresql://user@host/db",
    "failover_config": "the path of failover.toml",
    "cloudflare_api_token": "an API token with Load Balancing: Monitors and Pools Edit "
    "(account) and Load Balancers Edit (zone)",
    "cloudflare_account_id": "the 32-character account id from the Cloudflare dashboard",
    "cloudflare_zone_id": "the 32-character zone id of the load balancer's hostname",
    "cloudflare_base_url": "an http(s) URL (default https://api.cloudflare.com/client/v4)",
    "port": "a TCP port number from 1 to 65535",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "slack_team_id": "the workspace id the app is installed in (T followed by letters and digits)",
    "metrics_port": "a TCP port number from 1 to 65535 for /metrics alone",
    "metrics_token": "a bearer token that scrapers of /metrics must send",
    "http_header_timeout": "seconds, more than 0 and at most 300",
    "http_body_timeout": "seconds, more than 0 and at most 300",
    "public_url": "the bot's public https base URL, as Cloudflare and PagerDuty reach it "
    "(e.g. https://failover.example.com)",
    "cloudflare_webhook_secret": "the secret Cloudflare sends in cf-webhook-auth "
    "(`failover-bot notifications setup` generates one)",
    "pagerduty_routing_key": "the 32-character Integration Key of a PagerDuty Events API v2 "
    "integration",
    "pagerduty_routing_keys": "region=key pairs separated by commas, e.g. "
    "eu-west=KEY1,apac-sg=KEY2",
    "pagerduty_events_url": "an http(s) URL (default https://events.pagerduty.com/v2/enqueue)",
    "pagerduty_severities": "the severities that page, comma-separated, from critical, warning, "
    "info (default critical)",
    "pagerduty_webhook_secret": "the signing secret of the PagerDuty webhook subscription",
}


class Settings(BaseSettings):
    """Secrets and URLs; the topology lives in failover.toml (FAILOVER_CONFIG)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = SLACK_API_URL
    slack_channel: str | None = None
    cloudflare_api_token: str | None = None
    cloudflare_account_id: str | None = None
    cloudflare_zone_id: str | None = None
    cloudflare_base_url: str | None = None
    cloudflare_email: str | None = None
    cloudflare_api_key: str | None = None
    relay_token: str | None = None
    database_url: str = "sqlite+aiosqlite:///failover.db"
    failover_config: str = "failover.toml"
    port: int = Field(default=3000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The one workspace whose requests are served; unset: any workspace the app is installed in.
    slack_team_id: str | None = None
    # /metrics on a port of its own (then not on PORT), and/or behind a bearer token; both off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_token: str | None = None  # empty: no token wanted
    # Read timeouts of the HTTP server: the request line and headers (also how long an idle
    # keep-alive connection is kept), then the body. Slack sends small bodies at once.
    http_header_timeout: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout: float = Field(default=10.0, gt=0, le=300)
    # Where Cloudflare and PagerDuty reach this bot (notifications setup, check).
    public_url: str | None = None
    # Cloudflare's notifications (POST /cloudflare/notifications): the cf-webhook-auth secret.
    cloudflare_webhook_secret: str | None = None
    # PagerDuty: the Events API v2 routing key (per region where given), what pages, the
    # endpoint (the sandbox's stand-in in the demo) and the v3 webhook's signing secret.
    pagerduty_routing_key: str | None = None
    pagerduty_routing_keys: str | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_severities: str = "critical"
    pagerduty_webhook_secret: str | None = None

    @field_validator(
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "cloudflare_api_token",
        "cloudflare_account_id",
        "cloudflare_zone_id",
        "cloudflare_base_url",
        "relay_token",
        "public_url",
        "cloudflare_webhook_secret",
        "pagerduty_routing_key",
        "pagerduty_routing_keys",
        "pagerduty_webhook_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        # `KEY=` as a .env template leaves it (compose's env_file passes it on): not set, rather
        # than a malformed value.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xoxb-"):
            raise ValueError("does not start with xoxb-")
        return v

    @field_validator("slack_team_id")
    @classmethod
    def _team_id(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None  # `SLACK_TEAM_ID=` left empty in a .env template: any workspace
        if v is not None and not re.fullmatch(r"[TE][A-Z0-9]{2,}", v):
            raise ValueError("is not a Slack workspace id")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xapp-"):
            raise ValueError("does not start with xapp-")
        return v

    @field_validator("slack_channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        # An id, never a name: chat.update takes only ids (slackapi/python-slack-sdk#1495), and a
        # name changes when the channel is renamed. Empty (as a .env template leaves it): unset.
        if not v:
            return None
        if v.startswith("#"):
            raise ValueError(f"{v!r} is a channel name, not its id")
        if not _CHANNEL_ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a channel id")
        return v

    @field_validator("slack_api_url", "cloudflare_base_url", "public_url", "pagerduty_events_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("is not an http(s) URL")
        return v

    @field_validator("pagerduty_routing_key")
    @classmethod
    def _routing_key(cls, v: str | None) -> str | None:
        if v is not None and not _ROUTING_KEY.fullmatch(v):
            raise ValueError("is not a 32-character Integration Key")
        return v

    @field_validator("pagerduty_routing_keys")
    @classmethod
    def _routing_keys(cls, v: str | None) -> str | None:
        # region=KEY pairs; the regions are checked against failover.toml once it is loaded.
        if v is not None:
            routing_pairs(v)
        return v

    @field_validator("pagerduty_severities")
    @classmethod
    def _severities(cls, v: str) -> str:
        named = [s.strip().lower() for s in v.split(",") if s.strip()]
        wrong = [s for s in named if s not in PAGED_SEVERITIES]
        if wrong or not named:
            raise ValueError(f"names {', '.join(wrong) or 'no severity'}")
        return ",".join(named)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    def require(self, *names: str) -> None:
        """Stop with a line for each of ``names`` that is unset: all of them at once, so that an
        operator fixes the environment in one go rather than one variable per attempt."""
        missing = [
            f"{name.upper()} is not set: expected {_EXPECTED[name]}"
            for name in names
            if not getattr(self, name)
        ]
        if missing:
            raise ConfigError("\n".join(missing))

    @staticmethod
    def needed_to_serve(socket_mode: bool) -> tuple[str, ...]:
        """What ``serve`` cannot start without: over HTTP Slack's requests are signed; over
        Socket Mode the app-level token opens the connection."""
        return ("slack_bot_token", "slack_app_token" if socket_mode else "slack_signing_secret")

    @property
    def cloudflare_configured(self) -> bool:
        """True when the load balancer can be read; a half-set trio is a ConfigError."""
        trio = ("cloudflare_api_token", "cloudflare_account_id", "cloudflare_zone_id")
        if not any(getattr(self, name) for name in trio):
            return False
        self.require(*trio)
        for name in ("cloudflare_email", "cloudflare_api_key"):
            # Present at all, even empty: the SDK reads both from the environment and sends them
            # before the token (an empty one leaves it no credential: a TypeError on every call).
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"{name.upper()} is set: unset it, the Cloudflare SDK would use it instead of "
                    "CLOUDFLARE_API_TOKEN"
                )
        return True

    @property
    def slack_api_base(self) -> str:
        # slack_sdk joins method names onto the base, so it must end with a slash.
        return self.slack_api_url if self.slack_api_url.endswith("/") else self.slack_api_url + "/"


PAGED_SEVERITIES = ("critical", "warning", "info")  # the monitor's event severities


def routing_pairs(text: str) -> dict[str, str]:
    """``eu-west=KEY1,apac-sg=KEY2`` as {region: key}; a ValueError names what is wrong."""
    pairs: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        region, sep, key = (part.strip() for part in item.partition("="))
        if not sep or not region or not key:
            raise ValueError(f"has {item!r}, not region=key")
        if region in pairs:
            raise ValueError(f"names {region} twice")
        if not _ROUTING_KEY.fullmatch(key):
            raise ValueError(f"has a key for {region} that is not a 32-character Integration Key")
        pairs[region] = key
    return pairs


def load_settings() -> Settings:
    """Read the environment; each malformed value becomes a ConfigError line naming it (all of
    them, one line each)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            expected = _EXPECTED.get(name)
            hint = f": expected {expected}" if expected else ""
            lines.append(f"{name.upper()} {msg}{hint}")
        raise ConfigError("\n".join(lines)) from None
