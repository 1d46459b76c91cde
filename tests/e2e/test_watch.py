"""The seed's scenarios with the watch running: what the channel received, what the timeline holds.

The sandbox runs fast: the bot probes every second, reads Cloudflare every second, Cloudflare's
monitor checks every second; RTO Exceeded after 6 s and a 10 s flap window stand in for 60 s.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.assembly import Bot, build_bot
from bot.db import schema
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import Incident, TimelineEvent
from bot.sandbox.render import render_message
from bot.sandbox.world import CHANNEL, Sandbox

from ..conftest import CONFIG, FAST, edge, eventually


def channel(world: Sandbox) -> list[dict[str, Any]]:
    return world.slack.channels.get(CHANNEL, [])


def mains(world: Sandbox) -> list[dict[str, Any]]:
    return [m for m in channel(world) if "thread_ts" not in m]


def replies(world: Sandbox) -> list[str]:
    return [render_message(m) for m in channel(world) if "thread_ts" in m]


async def timeline(bot: Bot) -> tuple[Incident, list[str]]:
    async with sessionmaker(bot.engine)() as session:
        incident = (await session.scalars(select(Incident).order_by(Incident.id))).first()
        assert incident is not None
        rows = await session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident.id)
            .order_by(TimelineEvent.at, TimelineEvent.id)
        )
        return incident, [r.kind for r in rows]


def in_order(kinds: list[str], expected: list[str]) -> bool:
    it = iter(kinds)
    return all(k in it for k in expected)


async def closed(bot: Bot) -> bool:
    async with sessionmaker(bot.engine)() as session:
        incident = (await session.scalars(select(Incident))).first()
        return incident is not None and incident.closed_at is not None


async def test_single_region_outage(watching: tuple[Sandbox, Bot]) -> None:
    world, bot = watching
    await world.gateways["us-east"].set_mode("down")

    async def failed_over() -> bool:
        return bool(mains(world)) and "WNAM ENAM NSAM SSAM → eu-west" in render_message(
            mains(world)[0]
        )

    await eventually(failed_over, within=15)
    main = render_message(mains(world)[0])
    assert main.startswith("🔴 Incident #1 · CRITICAL · us-east down")

    async def down_replied() -> bool:
        return any(
            r.startswith("🔴 Pool Down · us-east") and "connection refused" in r
            for r in replies(world)
        )

    await eventually(down_replied, within=5)
    await world.gateways["us-east"].set_mode("healthy")

    async def resolved() -> bool:
        done = await closed(bot) and any("Resolved after" in r for r in replies(world))
        return done and render_message(mains(world)[0]).startswith("✅")

    await eventually(resolved, within=20)
    assert len(mains(world)) == 1  # one message, kept current
    final = render_message(mains(world)[0])
    assert final.startswith("✅ Incident #1 · RESOLVED · us-east down") and "RTO" in final
    assert any(
        "Failover Triggered" in r for r in replies(world)
    )  # held back by the window, then sent
    incident, kinds = await timeline(bot)
    assert in_order(
        kinds,
        ["Detected", "PoolDown", "FailoverTriggered", "Recovered", "TrafficRestored", "Closed"],
    )
    assert incident.rto is not None and incident.rto < 30
    assert incident.time_to_detect is not None and incident.time_to_recover is not None
    assert [c.method for c in world.slack.calls].count("chat.update") >= 1


async def test_multi_region_outage_then_rto_exceeded(watching: tuple[Sandbox, Bot]) -> None:
    world, bot = watching
    await world.gateways["us-east"].set_mode("down")
    await world.gateways["eu-west"].set_mode("down")

    async def on_apac() -> bool:
        return bool(mains(world)) and "→ apac-sg" in render_message(mains(world)[0])

    await eventually(on_apac, within=15)
    await world.gateways["apac-sg"].set_mode("down")

    async def exhausted() -> bool:  # the truth: the fallback us-east's origin refuses
        return await edge(world, "WEU") == (521, "foundation-us-east")

    # Cloudflare's monitor must fail apac-sg's retries first; a busy machine took over 10 s
    await eventually(exhausted, within=20)

    async def rto_exceeded() -> bool:
        return (
            any(r.startswith("🔴 RTO Exceeded") for r in replies(world))
            or "RTOExceeded" in (await timeline(bot))[1]
        )

    await eventually(rto_exceeded, within=20)
    _, kinds = await timeline(bot)
    assert in_order(
        kinds, ["Detected", "PoolDown", "FailoverTriggered", "NoHealthyPool", "RTOExceeded"]
    )

    async def stranded_shown() -> bool:
        return (
            "Cloudflare sends them to the fallback us-east, which is unhealthy, so users get errors"
            in render_message(mains(world)[0])
        )

    await eventually(stranded_shown, within=10)


async def test_partial_degradation_shifts_traffic(watching: tuple[Sandbox, Bot]) -> None:
    world, bot = watching
    await world.gateways["eu-west"].set_mode("degraded", check="d1")

    async def shifted() -> bool:
        return bool(mains(world)) and "WEU EEU ME NAF SAF → us-east" in render_message(
            mains(world)[0]
        )

    await eventually(shifted, within=15)

    async def down_replied() -> bool:
        return any("Pool Down · eu-west" in r and "d1 error" in r for r in replies(world))

    await eventually(down_replied, within=5)
    _, kinds = await timeline(bot)
    assert in_order(kinds, ["Detected", "PoolDown", "FailoverTriggered"])


async def test_gray_failure(watching: tuple[Sandbox, Bot]) -> None:
    world, bot = watching
    await world.gateways["apac-sg"].set_mode("gray", check="kv")

    async def said() -> bool:
        return "GrayFailure" in (await timeline(bot))[1] if mains(world) else False

    await eventually(said, within=15)
    _, kinds = await timeline(bot)
    assert "FailoverTriggered" not in kinds  # Cloudflare still sends SEAS to apac-sg

    async def replied() -> bool:
        return any("Gray Failure · apac-sg" in r for r in replies(world))

    await eventually(replied, within=15)
    gray = next(r for r in replies(world) if "Gray Failure" in r)
    assert "the bot's probes fail" in gray and "Cloudflare marks it healthy" in gray


# The flapping gateway is in tests/test_alerts_order.py: the same scenario on the list clock, in
# about a second instead of 30 s of sleeping here.


async def _true(value: bool) -> bool:
    return value


async def test_slack_rate_limits_are_waited_out(watching: tuple[Sandbox, Bot]) -> None:
    world, _ = watching
    world.slack.rate_limited = 2  # Slack answers 429 with Retry-After: 1, twice
    await world.gateways["apac-sg"].set_mode("down")
    await eventually(lambda: _true(bool(mains(world))), within=20)
    assert [c.method for c in world.slack.calls[:3]] == ["chat.postMessage"] * 3  # 429, 429, posted


async def test_catching_up_after_the_bot_was_down(tmp_path: Path) -> None:
    world = Sandbox(CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5, watch=FAST)
    await world.start()
    url = f"sqlite+aiosqlite:///{tmp_path}/watch.db"
    engine = create_engine(url)
    await schema.upgrade(engine)
    await engine.dispose()
    try:
        first = await build_bot(world.bot_settings(url))
        await first.start_watch()  # takes the lease, reads Cloudflare once: the cursor is set
        await asyncio.sleep(1.5)
        await first.aclose()
        await world.gateways["us-east"].set_mode("down")
        await asyncio.sleep(4)  # Cloudflare's monitor notices while no bot runs
        restarted = datetime.now(UTC)
        second = await build_bot(world.bot_settings(url))
        await second.start_watch()
        try:

            async def caught_up() -> bool:
                async with sessionmaker(second.engine)() as session:
                    rows = list(
                        await session.scalars(
                            select(TimelineEvent).where(TimelineEvent.kind == "CloudflareHealth")
                        )
                    )
                return any(
                    r.at < restarted and "foundation-us-east unhealthy" in r.text for r in rows
                )

            await eventually(caught_up, within=10)
        finally:
            await second.aclose()
    finally:
        await world.close()


async def test_a_slack_outage_does_not_stop_the_watch_and_posts_follow_in_order(
    watching: tuple[Sandbox, Bot],
) -> None:
    world, bot = watching
    world.slack.down = True
    await world.gateways["us-east"].set_mode("down")

    async def recorded() -> bool:
        async with sessionmaker(bot.engine)() as session:
            incident = (await session.scalars(select(Incident))).first()
            if incident is None:
                return False
            kinds = (await timeline(bot))[1]
            return "FailoverTriggered" in kinds

    await eventually(recorded, within=15)  # the watch went on while Slack was down
    assert mains(world) == []
    world.slack.down = False

    async def posted() -> bool:
        return bool(mains(world)) and "WNAM ENAM NSAM SSAM → eu-west" in render_message(
            mains(world)[0]
        )

    await eventually(posted, within=20)

    async def replied() -> bool:
        return any("Pool Down · us-east" in r for r in replies(world))

    await eventually(replied, within=10)
    assert len(mains(world)) == 1
    assert len(replies(world)) <= 2  # what piled up went out together, not as a flood
