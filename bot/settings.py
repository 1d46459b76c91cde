"""Settings from the environment, validated at start: one clear line per problem, then stop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

SLACK_API_URL = "https://slack.com/api/"

# What each setting should hold, for the line shown when it is missing or malformed.
_EXPECTED = {
    "slack_bot_token": "the bot token from the Slack app's OAuth page (xoxb-...)",
    "slack_signing_secret": "the signing secret from the Slack app's Basic Information page",
    "slack_app_token": "an app-level token with connections:write (xapp-...)",
    "slack_api_url": "an http(s) URL ending in /api/ (default https://slack.com/api/)",
    "slack_channel": "a channel id for alerts (e.g. C0123456789)",
    "database_url": "a SQLAlchemy URL: sqlite+aiosqlite:///file.db or postgresql://user@host/db",
    "failover_config": "the path of failover.toml",
    "cloudflare_api_token": "an API token with Load Balancing: Monitors and Pools Edit "
    "(account) and Load Balancers Edit (zone)",
    "cloudflare_account_id": "the 32-character account id from the Cloudflare dashboard",
    "cloudflare_zone_id": "the 32-character zone id of the load balancer's hostname",
    "cloudflare_base_url": "an http(s) URL (default https://api.cloudflare.com/client/v4)",
    "port": "a TCP port number from 1 to 65535",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
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

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xoxb-"):
            raise ValueError("does not start with xoxb-")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xapp-"):
            raise ValueError("does not start with xapp-")
        return v

    @field_validator("slack_api_url", "cloudflare_base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("is not an http(s) URL")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    def require(self, *names: str) -> None:
        """Stop with one line naming the first of ``names`` that is unset."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is not set: expected {_EXPECTED[name]}")

    @property
    def cloudflare_configured(self) -> bool:
        """True when the load balancer can be read; a half-set trio is a ConfigError."""
        trio = ("cloudflare_api_token", "cloudflare_account_id", "cloudflare_zone_id")
        if not any(getattr(self, name) for name in trio):
            return False
        self.require(*trio)
        if self.cloudflare_email or self.cloudflare_api_key:
            # The SDK then sends the global key and drops the token, whatever it is given.
            raise ConfigError(
                "CLOUDFLARE_EMAIL or CLOUDFLARE_API_KEY is set: unset them, the SDK would use them "
                "instead of CLOUDFLARE_API_TOKEN"
            )
        return True

    @property
    def slack_api_base(self) -> str:
        # slack_sdk joins method names onto the base, so it must end with a slash.
        return self.slack_api_url if self.slack_api_url.endswith("/") else self.slack_api_url + "/"


def load_settings() -> Settings:
    """Read the environment; a malformed value becomes one ConfigError line naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        expected = _EXPECTED.get(name)
        hint = f": expected {expected}" if expected else ""
        raise ConfigError(f"{name.upper()} {msg}{hint}") from None
