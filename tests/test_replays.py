"""Replays, ambiguous targets and App Home viewers (issue 12).

A signed Slack request sent again within Bolt's five minutes is answered without acting; a
command acts on the drain that was current when it was read, and says its number; every App
Home viewer is kept, however many open it at once. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.assembly import migrated_bot
from bot.db import schema
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import AuditEntry, HomeViewer, SlackRequest
from bot.db.replays import SeenRequests
from bot.errors import OperationRefused
from bot.fleet import Fleet
from bot.home import Home
from bot.operations.drain import DrainDriver
from bot.operations.workflow import Operations
from bot.reads import Dashboard
from bot.safety import Proposal
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack import TEAM_ID
from bot.sandbox.slack_client import CHANNEL, OPERATOR, SlackUser
from bot.sandbox.world import Sandbox
from bot.slack.server import build_web_app

from .conftest import CONFIG, FAST, eventually
from .e2e.conftest import Ops
from .fakes import FakeLoadBalancer, ListClock, RecordingNotifier
from .reading import operation

# ------------------------------------------------------------------ a bot served over HTTP


@pytest.fixture
async def ops(database_url: str, tmp_path: Path) -> AsyncIterator[Ops]:
    """A fast sandbox and a watching bot served over HTTP, on SQLite or PostgreSQL."""
    world = Sandbox(CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5, watch=FAST)
    await world.start()
    bot = await migrated_bot(world.bot_settings(database_url), watch=True)
    server = LocalServer(build_web_app(bot.slack))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Ops(world, bot, user)
    await user.aclose()
    await server.close()
    await bot.aclose()
    await world.close()


@dataclass
class Signed:
    """One slash command as Slack signs it: the same bytes and headers can be sent again."""

    body: str
    headers: dict[str, str]
    rid: str  # its response_url at the Slack stand-in


def signed_command(ops: Ops, text: str, user: str = OPERATOR) -> Signed:
    response_url = ops.world.slack.new_response_url(CHANNEL)
    form = {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "sandbox",
        "channel_id": CHANNEL,
        "channel_name": "failover",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/failover",
        "text": text,
        "api_app_id": "A0FAILOVER",
        "response_url": response_url,
        "trigger_id": f"trigger.{time.time_ns()}",
    }
    body = urlencode(form)
    return Signed(body, ops.user.signed_headers(body), response_url.rsplit("/", 1)[1])


async def send(ops: Ops, signed: Signed) -> tuple[int, str]:
    async with ops.user.http.post(
        ops.user.events_url, data=signed.body, headers=signed.headers
    ) as resp:
        return resp.status, await resp.text()


def replies(ops: Ops, signed: Signed) -> list[str]:
    return [render_message(r) for r in ops.world.slack.responses[signed.rid]]


async def answered(ops: Ops, signed: Signed) -> str:
    """The one reply the command got, once it came; then a moment for any second one."""

    async def came() -> bool:
        return bool(replies(ops, signed))

    await eventually(came, within=10)
    await asyncio.sleep(1.5)  # a command acted on twice answers twice within this
    assert len(replies(ops, signed)) == 1, replies(ops, signed)
    return replies(ops, signed)[0]


def sessions_of(ops: Ops) -> async_sessionmaker[AsyncSession]:
    return sessionmaker(ops.bot.engine)


async def state_is(ops: Ops, op_id: int, state: str, within: float) -> None:
    async def reached() -> bool:
        return (await operation(sessions_of(ops), op_id)).state == state

    await eventually(reached, within=within)


async def drained(ops: Ops, region: str, reason: str) -> int:
    """A drain asked for, confirmed with its button and in force; its number. Retried while the
    settle rule refuses it (a change to the pool in the last few seconds)."""

    async def proposed() -> bool:
        return "Ready to drain" in await ops.say(f"drain {region} --for 1h {reason}")

    await eventually(proposed, within=20, every=1.0)
    reply = await ops.press(f"Drain {region}")
    op_id = int(render_message(reply).split("(#", 1)[1].split(")", 1)[0])
    await state_is(ops, op_id, "active", within=10)
    return op_id


async def audited(ops: Ops, text: str) -> int:
    """How many times the audit trail recorded this command (written right after its reply)."""
    await asyncio.sleep(0.3)
    async with sessions_of(ops)() as session:
        found = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.text == text)
        )
    return int(found or 0)


async def test_a_replayed_drain_extend_extends_once(ops: Ops) -> None:
    op_id = await drained(ops, "eu-west", "database upgrade")
    before = (await operation(sessions_of(ops), op_id)).expires_at
    assert before is not None
    extend = signed_command(ops, "drain extend eu-west 1h")
    assert await send(ops, extend) == (200, "")  # acknowledged at once, answered through the URL
    assert f"The drain #{op_id} of eu-west now restores itself at" in await answered(ops, extend)
    # The same signed bytes again, as a replay sends them: acknowledged, and nothing else.
    assert await send(ops, extend) == (200, "")
    await answered(ops, extend)  # still the one reply
    assert (await operation(sessions_of(ops), op_id)).expires_at == before + timedelta(hours=1)
    assert await audited(ops, "drain extend eu-west 1h") == 1


async def test_a_replayed_restore_does_not_undo_a_newer_drain(ops: Ops) -> None:
    first = await drained(ops, "eu-west", "first upgrade")
    restore = signed_command(ops, "restore eu-west")
    assert await send(ops, restore) == (200, "")
    assert f"ending the drain #{first} of eu-west" in await answered(ops, restore)
    await state_is(ops, first, "restored", within=30)
    assert await ops.pool_enabled("eu-west")
    second = await drained(ops, "eu-west", "second upgrade")  # confirmed in between
    assert not await ops.pool_enabled("eu-west")

    assert await send(ops, restore) == (200, "")  # the restore, replayed
    await answered(ops, restore)
    await asyncio.sleep(1.5)  # the driver acts on a restoring drain within a second
    assert (await operation(sessions_of(ops), second)).state == "active"
    assert not await ops.pool_enabled("eu-west")
    assert await audited(ops, "restore eu-west") == 1


async def test_identical_requests_at_once_act_once(ops: Ops) -> None:
    op_id = await drained(ops, "eu-west", "database upgrade")
    before = (await operation(sessions_of(ops), op_id)).expires_at
    assert before is not None
    extend = signed_command(ops, "drain extend eu-west 30m")
    answers = await asyncio.gather(*(send(ops, extend) for _ in range(20)))
    assert answers == [(200, "")] * 20
    assert "now restores itself at" in await answered(ops, extend)
    assert (await operation(sessions_of(ops), op_id)).expires_at == before + timedelta(minutes=30)
    assert await audited(ops, "drain extend eu-west 30m") == 1


async def test_a_confirm_button_acts_only_on_its_own_drain(ops: Ops) -> None:
    await ops.say("drain eu-west --for 1h first")
    first_message = ops.last
    assert "cancelled" in await ops.say("drain cancel eu-west")
    await ops.say("drain eu-west --for 1h second")
    second_message = ops.last
    stale = await ops.press("Drain eu-west", message=first_message)  # the first one's button
    assert "This drain is cancelled now." in render_message(stale)
    await asyncio.sleep(1.5)
    assert await ops.pool_enabled("eu-west")
    reply = await ops.press("Drain eu-west", message=second_message)
    assert "Draining eu-west (#2)" in render_message(reply)


async def test_300_app_home_opens_at_once_keep_every_viewer(ops: Ops) -> None:
    users = [f"U{n:04d}" for n in range(300)]
    statuses = await asyncio.gather(
        *(ops.user.event({"type": "app_home_opened", "user": u, "tab": "home"}) for u in users)
    )
    assert statuses == [200] * 300

    def published() -> set[str]:
        return {
            str(c.args.get("user_id")) for c in ops.world.slack.calls if c.method == "views.publish"
        }

    async def all_shown() -> bool:
        return published() >= set(users)

    await eventually(all_shown, within=60)
    async with sessions_of(ops)() as session:
        kept = list(await session.scalars(select(HomeViewer.user_id)))
    assert sorted(kept) == users
    # The refresh reaches every one of them when the dashboard changes.
    reached = RecordingPublisher()
    home = Home(ops.bot.fleet, sessions_of(ops), lambda: datetime.now(UTC))
    assert await home.refresh(reached) == 300
    assert sorted(reached.users) == users


class RecordingPublisher:
    def __init__(self) -> None:
        self.users: list[str] = []

    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None:
        self.users.append(user)


# ------------------------------------------------------------------ the store of seen requests


@pytest.fixture
async def sessions(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_url)
    yield sessionmaker(engine)
    await engine.dispose()


def stamp(at: datetime) -> str:
    return str(int(at.timestamp()))


async def test_seen_requests_once_each_and_pruned_after_ten_minutes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ListClock()
    seen = SeenRequests(sessions, clock)
    old = stamp(clock())
    firsts = await asyncio.gather(*(seen.first_time(old, "v0=aa") for _ in range(5)))
    assert sorted(firsts) == [False] * 4 + [True]
    assert await seen.first_time(old, "v0=bb")  # another request in the same second
    # A second instance sharing the database knows them too.
    assert not await SeenRequests(sessions, clock).first_time(old, "v0=aa")

    clock.advance(9 * 60)
    await seen.first_time(stamp(clock()), "v0=cc")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SlackRequest)) == 3
    clock.advance(2 * 60)  # the first ones' timestamps are 11 minutes old: no signature passes
    await seen.first_time(stamp(clock()), "v0=dd")
    async with sessions() as session:
        left = set(await session.scalars(select(SlackRequest.signature)))
    assert left == {"v0=cc", "v0=dd"}


# ------------------------------------------------------------------ the drain a command meant


@dataclass
class Rig:
    fleet: Fleet
    clock: ListClock
    lb: FakeLoadBalancer
    ops: Operations
    driver: DrainDriver
    channel: RecordingNotifier
    sessions: async_sessionmaker[AsyncSession]

    async def drive(self, after: float = 0) -> None:
        self.clock.advance(after)
        await self.driver.drive(self.channel)

    async def active_drain(self, region: str) -> int:
        proposed = await self.ops.propose(Proposal("drain", region), "upgrade", OPERATOR)
        assert proposed.operation is not None, proposed.assessment.refusals
        await self.ops.confirm(proposed.operation.id, OPERATOR)
        await self.drive()
        assert (await operation(self.sessions, proposed.operation.id)).state == "active"
        return proposed.operation.id

    async def restored(self, region: str) -> None:
        await self.ops.restore(region, "U0OTHER")
        await self.drive()
        self.lb.set_health(region, True)
        await self.drive(after=2)


@pytest.fixture
def rig(fleet: Fleet, sessions: async_sessionmaker[AsyncSession]) -> Rig:
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    ops = Operations(fleet, sessions, lb, clock, "C0OPS")
    driver = DrainDriver(fleet, sessions, lb, clock)
    return Rig(fleet, clock, lb, ops, driver, RecordingNotifier(clock), sessions)


async def test_a_restore_parsed_before_a_newer_drain_refuses_it(rig: Rig) -> None:
    first = await rig.active_drain("eu-west")
    asked = await rig.ops.drain_of("eu-west")  # what `restore eu-west` read
    assert asked == first
    # Before it writes, the drain is restored by someone else and a newer one confirmed.
    await rig.restored("eu-west")
    rig.clock.advance(rig.fleet.operations.settle + 1)
    second = await rig.active_drain("eu-west")
    with pytest.raises(
        OperationRefused,
        match=rf"Drain #{first} of eu-west has ended since your command and drain #{second} is "
        "the current one; nothing was done",
    ):
        await rig.ops.restore("eu-west", OPERATOR, asked)
    await rig.drive(after=1)
    assert (await operation(rig.sessions, second)).state == "active"
    assert not rig.lb.enabled("eu-west")


async def test_an_extend_of_a_drain_that_ended_is_refused(rig: Rig) -> None:
    first = await rig.active_drain("eu-west")
    asked = await rig.ops.drain_of("eu-west")
    await rig.restored("eu-west")
    with pytest.raises(OperationRefused, match=rf"Drain #{first} of eu-west has ended since"):
        await rig.ops.extend("eu-west", 3600, OPERATOR, asked)


async def test_a_restore_that_saw_no_drain_does_not_touch_one_asked_for_since(rig: Rig) -> None:
    asked = await rig.ops.drain_of("eu-west")
    assert asked is None
    proposed = await rig.ops.propose(Proposal("drain", "eu-west"), "upgrade", OPERATOR)
    assert proposed.operation is not None
    with pytest.raises(OperationRefused, match="was asked for after your command"):
        await rig.ops.restore("eu-west", OPERATOR, asked)
    state = (await operation(rig.sessions, proposed.operation.id)).state
    assert state == "awaiting_confirmation"


# ------------------------------------------------------------------ the migration


STORED_STATE = sa.table(
    "stored_state",
    sa.column("name", sa.String()),
    sa.column("value", sa.JSON()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


async def test_the_migration_moves_the_viewers_list_into_rows_and_back(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await schema.upgrade(engine, "0005")
        at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(STORED_STATE).values(
                    name="home_viewers", value={"users": ["U2", "U1", "U2"]}, updated_at=at
                )
            )
        await schema.upgrade(engine)
        async with sessionmaker(engine)() as session:
            rows = list(await session.scalars(select(HomeViewer).order_by(HomeViewer.user_id)))
        assert [(r.user_id, r.first_opened_at) for r in rows] == [("U1", at), ("U2", at)]
        async with engine.connect() as conn:
            left = await conn.scalar(
                select(func.count())
                .select_from(STORED_STATE)
                .where(STORED_STATE.c.name == "home_viewers")
            )
        assert left == 0
        await schema.downgrade(engine, "0005")
        async with engine.connect() as conn:
            value = await conn.scalar(
                select(STORED_STATE.c.value).where(STORED_STATE.c.name == "home_viewers")
            )
        assert value == {"users": ["U1", "U2"]}
    finally:
        await engine.dispose()
