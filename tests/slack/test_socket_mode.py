"""Socket Mode is wired to the same app (it cannot connect offline)."""

from __future__ import annotations

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.assembly import build_bot
from bot.errors import ConfigError
from bot.sandbox.world import Sandbox
from bot.slack.socket_mode import socket_mode_handler

from ..conftest import sandbox_settings


async def test_socket_mode_uses_the_app_token_and_the_same_listeners(
    world: Sandbox, migrated_url: str
) -> None:
    settings = sandbox_settings(world, migrated_url).model_copy(
        update={"slack_app_token": "xapp-1-A0-123-abc", "slack_signing_secret": None}
    )
    bot = await build_bot(settings, socket_mode=True)
    try:
        handler = socket_mode_handler(bot.slack, settings)
        assert isinstance(handler, AsyncSocketModeHandler)
        assert handler.app is bot.slack
        assert handler.client.app_token == "xapp-1-A0-123-abc"
        await handler.client.close()  # type: ignore[no-untyped-call]
    finally:
        await bot.aclose()


async def test_socket_mode_without_app_token_says_so(world: Sandbox, migrated_url: str) -> None:
    settings = sandbox_settings(world, migrated_url)
    # Said before anything is opened, the database included.
    with pytest.raises(ConfigError, match=r"^SLACK_APP_TOKEN is not set"):
        await build_bot(settings, socket_mode=True)
