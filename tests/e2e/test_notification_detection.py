"""Through the sandbox: the Cloudflare stand-in's monitor marks a pool unhealthy, its Notifications
dispatch the Load Balancing health alert to the bot's webhook (set up by `notifications setup`),
and the lease holder fails traffic over at once, long before its next API read."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.assembly import Bot, migrated_bot
from bot.db.models import CloudflareNotification, TimelineEvent
from bot.sandbox.servers import LocalServer
from bot.sandbox.world import Sandbox
from bot.slack.server import build_web_app

from ..conftest import CONFIG, FAST, eventually

# Reads of Cloudflare's API far apart: a failover seen within seconds was seen by a notification.
SLOW_POLL = FAST | {"cloudflare_poll": "120s"}


@pytest.fixture
async def notified(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Bot]]:
    world = Sandbox(
        CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5, watch=SLOW_POLL, notifications=True
    )
    await world.start()
    database = f"sqlite+aiosqlite:///{tmp_path}/notified.db"
    bot = await migrated_bot(world.bot_settings(database), watch=True)
    server = LocalServer(
        build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
    )
    await server.start()
    await world.notify_bot(server.url, database)  # the real setup, against the stand-in
    yield world, bot
    await server.close()
    await bot.aclose()
    await world.close()


async def test_a_notification_fails_over_before_the_next_read(
    notified: tuple[Sandbox, Bot],
) -> None:
    world, bot = notified
    leadership = bot.leadership
    assert leadership is not None
    await eventually(lambda: _true(leadership.leading), within=10)
    sessions = leadership.watch.sessions

    async def failover_by_notification() -> bool:
        async with sessions() as session:
            rows = await session.scalars(
                select(TimelineEvent).where(TimelineEvent.kind == "FailoverTriggered")
            )
            return any(r.source == "notification" and r.region == "eu-west" for r in rows)

    started = time.monotonic()
    await world.gateways["eu-west"].set_mode("down")
    took = await eventually(failover_by_notification, within=30)
    print(f"gateway down -> Failover Triggered by the notification: {took:.1f} s")
    assert time.monotonic() - started < 120  # well before the next API read
    async with sessions() as session:
        applied = list(
            await session.scalars(
                select(CloudflareNotification.result).where(
                    CloudflareNotification.result.like("applied: pool foundation-eu-west%")
                )
            )
        )
        notes = list(
            await session.scalars(
                select(TimelineEvent.text).where(TimelineEvent.kind == "CloudflareNotification")
            )
        )
    assert applied == ["applied: pool foundation-eu-west unhealthy"]
    # The bot's own probes (every second here) may open the incident first; the traffic move
    # is the notification's, and the timeline says it came before any API read.
    assert any(
        n.startswith("Cloudflare notification: pool foundation-eu-west unhealthy")
        and n.endswith("(before any API read)")
        for n in notes
    ), notes


async def _true(value: bool) -> bool:
    return value
