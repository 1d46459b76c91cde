"""Socket Mode, for development: the same Bolt app over Slack's websocket."""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.settings import Settings


def socket_mode_handler(app: AsyncApp, settings: Settings) -> AsyncSocketModeHandler:
    settings.require("slack_app_token")
    return AsyncSocketModeHandler(app, settings.slack_app_token)
