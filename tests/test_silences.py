"""Silences: only operators set or end them (command and button, the button only as the bot drew
it), an incident is posted and kept current whatever is silenced, a silence mutes its region's
replies only, and every silence and its end (unsilence or expiry, once) is told in the channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import alerts
from bot.alerts import Alerts
from bot.assembly import Bot
from bot.db import schema
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.monitor import Event, EventKind, MonitorState, PoolState, PoolTrack
from bot.sandbox.render import render_blocks, render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox
from bot.silences import Silences
from bot.slack.server import build_web_app
from bot.views.alerts import incident_blocks
from bot.views.silences import silenced_reply

from .conftest import eventually
from .fakes import ListClock, RecordingNotifier

# ---------------------------------------------------------------------- through Slack


@dataclass
class Channel:
    """The served, watching bot as a Slack user and the channel see it."""

    world: Sandbox
    bot: Bot
    user: SlackUser

    async def say(self, text: str, user: str = "U0OPERATOR") -> dict[str, Any]:
        exchange = await self.user.command(text, user=user)
        assert exchange.replies, text
        return exchange.replies[-1]

    async def click(self, action_id: str, value: str, user: str = "U0OPERATOR") -> dict[str, Any]:
        exchange = await self.user.click(action_id, value, user=user)
        assert exchange.status == 200 and exchange.replies, (action_id, value)
        return exchange.replies[-1]

    def messages(self) -> list[dict[str, Any]]:
        return list(self.world.slack.channels.get(CHANNEL, []))

    def top_level(self) -> list[dict[str, Any]]:
        return [m for m in self.messages() if not m.get("thread_ts")]

    def silence_news(self) -> list[str]:
        """The channel's announcements of silences and their ends, as people read them."""
        words = (" silenced by ", " unsilenced by ", "'s silence expired")
        return [
            render_message(m)
            for m in self.top_level()
            if any(w in render_message(m) for w in words)
        ]


@pytest.fixture
async def channel(watching: tuple[Sandbox, Bot]) -> AsyncIterator[Channel]:
    world, bot = watching
    server = LocalServer(build_web_app(bot.slack, settings=bot.settings))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Channel(world, bot, user)
    await user.aclose()
    await server.close()


def shown(reply: dict[str, Any]) -> str:
    return render_message(reply)


async def test_only_operators_silence_and_unsilence_and_the_channel_is_told(
    channel: Channel,
) -> None:
    refused = await channel.say("silence eu-west 2h noisy", user="U0STRANGER")
    assert refused["response_type"] == "ephemeral"
    assert "Only operators may silence alerts." in shown(refused)
    assert "Operators:" in shown(refused) and "U0OPERATOR" in shown(refused)
    assert "No region is silenced." in shown(await channel.say("silences", user="U0STRANGER"))

    done = await channel.say("silence eu-west 2h db upgrade")
    assert "Silenced eu-west for 2h" in shown(done)
    refused = await channel.say("unsilence eu-west", user="U0STRANGER")
    assert refused["response_type"] == "ephemeral"
    assert "Only operators may unsilence alerts." in shown(refused)
    assert "eu-west" in shown(await channel.say("silences", user="U0STRANGER"))  # still there

    # An operator through the on-call user group ends it.
    ended = await channel.say("unsilence eu-west", user="U0ONCALL")
    assert "eu-west is no longer silenced." in shown(ended)

    async def both_told() -> bool:
        return len(channel.silence_news()) == 2

    await eventually(both_told, within=5)
    began, over = channel.silence_news()
    assert "eu-west silenced by u0operator until" in began and "(2h)" in began
    assert "Reason: db upgrade" in began
    assert "eu-west unsilenced by u0oncall" in over and "reason: db upgrade" in over
    # The refusals changed nothing and told the channel nothing.
    assert not any("noisy" in m for m in channel.silence_news())


TAMPERED = [
    ("silence_region:us-east", "eu-west"),  # the id names another region than the value
    ("silence_region:mars", "mars"),  # not a region of failover.toml
    ("silence_region:eu-west", "EU-WEST"),  # not as the bot writes it
    ("silence_region:eu-west", "eu-west "),
    ("silence_region:eu-west", ""),
    ("silence_region:eu-west:extra", "eu-west"),
    ("silence_regionx:eu-west", "eu-west"),
]


async def test_the_silence_button_is_for_operators_and_only_as_the_bot_draws_it(
    channel: Channel,
) -> None:
    refused = await channel.click("silence_region:eu-west", "eu-west", user="U0STRANGER")
    assert refused["response_type"] == "ephemeral"
    assert "Only operators may silence alerts." in shown(refused)
    for action_id, value in TAMPERED:
        reply = await channel.click(action_id, value)
        assert reply["response_type"] == "ephemeral", (action_id, value)
        text = shown(reply)
        assert "This Silence button" in text and "nothing was silenced" in text, text
    mismatch = await channel.click("silence_region:us-east", "eu-west")
    assert "does not match its region `eu-west`" in shown(mismatch)
    assert "the bot draws `silence_region:eu-west`" in shown(mismatch)
    unknown = await channel.click("silence_region:mars", "mars")
    assert "not a region of failover.toml" in shown(unknown) and "`eu-west`" in shown(unknown)
    assert "No region is silenced." in shown(await channel.say("silences"))
    timeline = await channel.click("show_timeline", "1 markdown")  # the other button, likewise
    assert "carries `1 markdown`, not an incident number" in shown(timeline)

    done = await channel.click("silence_region:eu-west", "eu-west")
    assert "Silenced eu-west for 1h" in shown(done)

    async def told() -> bool:
        return len(channel.silence_news()) == 1

    await eventually(told, within=5)
    await asyncio.sleep(1.5)  # a sweep later: still one announcement, the refusals said nothing
    [news] = channel.silence_news()
    assert "eu-west silenced by u0operator" in news
    assert "Reason: silenced from the alert's button" in news


async def test_a_fully_silenced_outage_is_posted_kept_current_and_recoveries_reply(
    channel: Channel,
) -> None:
    """The review's case: two regions silenced, then both go down."""
    regions = ("us-east", "eu-west")
    for region in regions:
        await channel.say(f"silence {region} 1h planned work")
    for region in regions:
        await channel.world.gateways[region].set_mode("down")

    def incident() -> dict[str, Any] | None:
        return next((m for m in channel.top_level() if "Incident #1" in shown(m)), None)

    async def posted() -> bool:
        message = incident()
        return message is not None and all(f"{r} down" in shown(message) for r in regions)

    await eventually(posted, within=20)
    message = incident()
    assert message is not None
    for region in regions:  # the message says which regions are silenced, and until when
        assert f"{region} down · silenced until" in shown(message)

    for region in regions:
        await channel.world.gateways[region].set_mode("healthy")

    async def resolved() -> bool:
        message = incident()
        return message is not None and "RESOLVED" in shown(message)

    await eventually(resolved, within=40)
    message = incident()
    assert message is not None and message.get("edited")  # the same message, kept current
    replies = [shown(m) for m in channel.messages() if m.get("thread_ts") == message["ts"]]
    assert any("Recovered · us-east" in r for r in replies)  # recoveries reply to it
    assert any("Resolved" in r for r in replies)
    for reply in replies:  # nothing else was said about the silenced regions
        for kind in ("Pool Down", "Failover Triggered", "No Healthy Pool", "RTO Exceeded"):
            assert f"{kind} · us-east" not in reply and f"{kind} · eu-west" not in reply, reply


async def test_a_short_silence_expires_and_the_channel_is_told_once(channel: Channel) -> None:
    await channel.say("silence apac-sg 2s flaky relay")

    async def expired() -> bool:
        return any("silence expired" in m for m in channel.silence_news())

    await eventually(expired, within=15)
    await asyncio.sleep(6)  # another run of the expiry job: nothing said twice
    news = channel.silence_news()
    assert len(news) == 2
    assert "apac-sg's silence expired at" in news[1] and "reason: flaky relay" in news[1]
    assert "No region is silenced." in shown(await channel.say("silences"))


# ---------------------------------------------------------------------- the sender, in its time

T0 = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
C = "C0ALERTS"


@dataclass
class Rig:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    notifier: RecordingNotifier
    state: MonitorState

    def silences(self) -> Silences:
        return Silences(self.sessions, self.clock, C)

    async def flush(self) -> int:
        return await Alerts(
            self.sessions, self.notifier, self.fleet, lambda: self.state, self.clock
        ).flush()

    async def down(self, *regions: str) -> None:
        now = self.clock()
        async with self.sessions.begin() as session:
            await Incidents(self.fleet, C).apply(
                session, [Event(EventKind.POOL_DOWN, now, r, "refused") for r in regions], now
            )
        for r in regions:
            self.state.pools[r].state = PoolState.DOWN


@pytest.fixture
async def rig(
    fleet: Fleet, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    monkeypatch.setattr(alerts, "POST_SPACING", 0.0)
    engine = create_engine(migrated_url)
    clock = ListClock(T0)
    state = MonitorState(pools={r: PoolTrack(state=PoolState.HEALTHY) for r in fleet.regions})
    yield Rig(fleet, sessionmaker(engine), clock, RecordingNotifier(clock), state)
    await engine.dispose()


async def test_a_silence_mutes_its_regions_replies_only_and_the_message_says_so(rig: Rig) -> None:
    await rig.silences().silence("eu-west", timedelta(minutes=20), "db upgrade", "alice")
    await rig.down("eu-west", "us-east")
    await rig.flush()
    [message] = rig.notifier.of("post_incident")
    assert message.incident is not None
    text = render_blocks([b.to_dict() for b in incident_blocks(message.incident)])
    assert "eu-west down · silenced until 23:50 UTC" in text
    assert "us-east down" in text and "us-east down · silenced" not in text
    replies = rig.notifier.texts("post_thread")
    assert replies == ["PoolDown us-east"]  # eu-west's reply is muted, us-east's is not

    # Silencing or unsilencing a region of the open incident brings its message up to date.
    updates = len(rig.notifier.of("update_incident"))
    await rig.silences().unsilence("eu-west", "bob")
    await rig.flush()
    latest = rig.notifier.of("update_incident")
    assert len(latest) == updates + 1 and latest[-1].incident is not None
    assert latest[-1].incident.silenced == []


async def test_until_shows_the_date_when_it_is_not_today(rig: Rig) -> None:
    row = await rig.silences().silence("eu-west", timedelta(hours=2), "night work", "alice")
    assert "until 2026-11-27 01:30 UTC" in silenced_reply(row, 7200).text
    await rig.silences().silence("apac-sg", timedelta(minutes=15), "relay swap", "alice")
    await rig.flush()
    night, short = rig.notifier.texts("post_silence")
    assert night == (
        "eu-west silenced by alice until 2026-11-27 01:30 UTC (2h): its thread replies are "
        "muted; incident messages and recoveries still post. Reason: night work"
    )
    assert "apac-sg silenced by alice until 23:45 UTC (15m)" in short
    rig.clock.set(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))  # after midnight: today again
    await rig.silences().unsilence("eu-west", "bob")
    await rig.flush()
    assert rig.notifier.texts("post_silence")[-1] == (
        "eu-west unsilenced by bob at 01:00 UTC (silenced by alice until 01:30 UTC; "
        "reason: night work): its thread replies post again."
    )


async def test_an_expiry_is_announced_once_and_an_ended_silence_never(
    rig: Rig, migrated_url: str
) -> None:
    await rig.silences().silence("eu-west", timedelta(minutes=1), "deploy", "alice")
    await rig.silences().silence("apac-sg", timedelta(minutes=1), "relay", "alice")
    await rig.silences().unsilence("apac-sg", "bob")  # ended before its time
    rig.clock.advance(120)
    if migrated_url.startswith("postgresql"):
        # Two instances that both think they lead (a lease handover) end it at once.
        ended = list(await asyncio.gather(rig.silences().expire(), rig.silences().expire()))
    else:  # SQLite serves one instance (README): the next run finds nothing left
        ended = [await rig.silences().expire(), await rig.silences().expire()]
    assert sorted(ended) == [0, 1]
    await rig.flush()
    rig.clock.advance(60)
    assert await rig.silences().expire() == 0
    await rig.flush()
    news = rig.notifier.texts("post_silence")
    assert [n.split(" ", 1)[0] for n in news] == ["eu-west", "apac-sg", "apac-sg", "eu-west's"]
    assert news[-1] == (
        "eu-west's silence expired at 23:31 UTC (silenced by alice; reason: deploy): "
        "its thread replies post again."
    )


async def test_silences_that_ran_out_before_the_upgrade_are_not_announced(
    database_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url)
    try:
        await schema.upgrade(engine, "0004")
        table = sa.table(
            "silences",
            *(sa.column(c) for c in ("id", "region", "reason", "created_by")),
            *(sa.column(c, sa.DateTime(timezone=True)) for c in ("until", "created_at")),
        )
        old = datetime.now(UTC) - timedelta(days=3)
        async with engine.begin() as conn:
            await conn.execute(
                table.insert().values(
                    id=1, region="eu-west", reason="long ago", created_by="alice",
                    until=old + timedelta(hours=1), created_at=old,
                )
            )  # fmt: skip
        await schema.upgrade(engine)
        monkeypatch.setattr(alerts, "POST_SPACING", 0.0)
        sessions = sessionmaker(engine)
        clock = ListClock(datetime.now(UTC))
        assert await Silences(sessions, clock, C).expire() == 0
        notifier = RecordingNotifier(clock)
        state = MonitorState(pools={r: PoolTrack() for r in fleet.regions})
        assert await Alerts(sessions, notifier, fleet, lambda: state, clock).flush() == 0
        assert notifier.posts == []
    finally:
        await engine.dispose()
