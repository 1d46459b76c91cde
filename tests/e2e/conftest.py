"""Fixtures for the end-to-end tests that drive operations through Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.assembly import Bot
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox
from bot.slack.server import build_web_app


@dataclass
class Ops:
    world: Sandbox
    bot: Bot
    user: SlackUser

    async def say(self, text: str, user: str = "U0OPERATOR") -> str:
        exchange = await self.user.command(text, user=user)
        assert exchange.replies, text
        self.last = exchange.replies[-1]
        return render_message(self.last)

    async def press(
        self, label: str, user: str = "U0OPERATOR", message: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        source = message or self.last
        for block in source.get("blocks", []):
            for element in block.get("elements", []):
                if element.get("type") == "button" and label in element["text"]["text"]:
                    exchange = await self.user.click(
                        element["action_id"], element["value"], user=user
                    )
                    assert exchange.status == 200
                    return exchange.replies[-1]
        raise AssertionError(f"no button {label!r} in {render_message(source)}")

    async def pool_enabled(self, region: str) -> bool:
        name = self.bot.fleet.regions[region].pool
        return bool(
            next(p["enabled"] for p in self.world.cloudflare.pools.values() if p["name"] == name)
        )

    def channel(self) -> list[str]:
        return [render_message(m) for m in self.world.slack.channels.get(CHANNEL, [])]


@pytest.fixture
async def ops(watching: tuple[Sandbox, Bot]) -> AsyncIterator[Ops]:
    world, bot = watching
    server = LocalServer(build_web_app(bot.slack))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Ops(world, bot, user)
    await user.aclose()
    await server.close()
