"""Who SLACK_BOT_TOKEN is, asked of Slack: what `failover-bot check --online` reports."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.errors import ConfigError, ProviderUnavailable
from bot.settings import Settings
from bot.slack.app import web_client


async def who_am_i(settings: Settings) -> str:
    """Who the token is, from auth.test (https://api.slack.com/methods/auth.test).

    A token Slack refuses is a ConfigError naming the variable; Slack out of reach or failing
    (after the client's retries) is a ProviderUnavailable naming the URL."""
    client = web_client(settings)
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        data = exc.response.data if exc.response is not None else None
        error = data.get("error") if isinstance(data, dict) else None
        if error and status < 500:
            raise ConfigError(
                f"SLACK_BOT_TOKEN was refused by Slack ({error}): expected the Bot User OAuth "
                "Token of the installed app (xoxb-...)"
            ) from None
        raise ProviderUnavailable(
            f"Slack's Web API at {settings.slack_api_base} failed (HTTP {status})"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ProviderUnavailable(
            f"Slack's Web API at {settings.slack_api_base} did not answer "
            f"({str(exc) or type(exc).__name__})"
        ) from None
    return (
        f"the bot @{resp.get('user')} ({resp.get('user_id')}) in workspace {resp.get('team')} "
        f"({resp.get('team_id')})"
    )
