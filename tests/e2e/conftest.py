"""Fixtures for the end-to-end tests that drive operations through Slack."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.assembly import Bot
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox
from bot.slack.server import build_web_app

from ..conftest import ROOT, eventually


def serve_environment(world: Sandbox, database_url: str, port: int) -> dict[str, str]:
    """This machine's environment, less any Slack or Cloudflare settings, plus the world's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
    return clean | world.bot_environment(database_url) | {"PORT": str(port)}


async def start_serve(env: dict[str, str], **streams: int) -> asyncio.subprocess.Process:
    """`failover-bot serve` as the Procfile runs it, once its /healthz answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", cwd=ROOT, env=env,
        **({"stderr": asyncio.subprocess.DEVNULL} | streams),  # type: ignore[arg-type]
    )  # fmt: skip
    base = f"http://127.0.0.1:{env['PORT']}"
    async with httpx.AsyncClient() as http:

        async def up() -> bool:
            try:
                return (await http.get(f"{base}/healthz")).status_code == 200
            except httpx.ConnectError:
                return False

        await eventually(up, within=20)
    return proc


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
    server = LocalServer(
        build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
    )
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Ops(world, bot, user)
    await user.aclose()
    await server.close()
