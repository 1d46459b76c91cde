"""Cloudflare's API budget in the steady state, counted at the stand-in: the lease holder's
watch (every 15 s), two drains in force, and one `/failover status` a second stay under 300
calls per 5 minutes (Cloudflare allows 1,200 for every client of the account together).

At production timings (failover.toml's cloudflare_poll 15 s, cloudflare_cache 2 s, the edge's
propagation 5 s), run for 30 s and scaled to 5 minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.assembly import Bot, migrated_bot
from bot.db.engine import sessionmaker
from bot.db.models import Operation
from bot.safety import Proposal
from bot.sandbox.world import Sandbox

from ..conftest import CONFIG, eventually

WINDOW = 30.0  # seconds counted
BUDGET = 300  # calls per 5 minutes, a quarter of Cloudflare's 1,200


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Bot]]:
    world = Sandbox(
        CONFIG,
        tmp_path,
        monitor_interval=1.0,
        propagation=5.0,  # failover.toml's assumed propagation: the cache is not capped below it
        watch={"cloudflare_poll": "15s", "cloudflare_cache": "2s", "probe_interval": "10s"},
        operations={"settle": "1s"},  # the second drain need not wait a minute
    )
    await world.start()
    bot = await migrated_bot(world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/b.db"), watch=True)
    yield world, bot
    await bot.aclose()
    await world.close()


async def drain(bot: Bot, region: str) -> None:
    operations = bot.router.services.operations
    assert operations is not None
    proposed = await operations.propose(Proposal("drain", region), "budget test", "U0OPERATOR")
    assert proposed.operation is not None, proposed.assessment.refusals
    await operations.confirm(proposed.operation.id, "U0OPERATOR")

    async def active() -> bool:
        async with sessionmaker(bot.engine)() as session:
            op = await session.get(Operation, proposed.operation.id)  # type: ignore[union-attr]
            return op is not None and op.state == "active"

    await eventually(active, within=10)


@pytest.mark.timeout(120)
async def test_the_watch_two_drains_and_a_status_a_second_stay_under_300_calls(
    production: tuple[Sandbox, Bot],
) -> None:
    world, bot = production
    await drain(bot, "eu-west")
    await asyncio.sleep(1.1)  # the settle time
    await drain(bot, "apac-sg")
    async with sessionmaker(bot.engine)() as session:
        states = [op.state for op in await session.scalars(select(Operation))]
    assert states == ["active", "active"]

    status = bot.router.services.status
    mark = len(world.cloudflare.requests)
    started = time.monotonic()
    ages = []
    while time.monotonic() - started < WINDOW:
        report = await status.check()  # one `/failover status` a second
        assert report.cloudflare is not None and report.cloudflare.view is not None
        view = report.cloudflare.view
        assert view.read_at is not None and view.stale is None
        ages.append(view.age(report.checked_at))
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
    elapsed = time.monotonic() - started
    calls = world.cloudflare.requests[mark:]
    per_5_minutes = len(calls) * 300 / elapsed
    kinds = Counter(f"{m} {p.rsplit('/', 1)[-1]}" for m, p in calls)
    print(f"{len(calls)} calls in {elapsed:.0f} s: {per_5_minutes:.0f} per 5 minutes; {kinds}")
    assert per_5_minutes < BUDGET, kinds
    assert not any(m == "PATCH" for m, _ in calls)  # drains in force change nothing
    # No answer older than the cache keeps a view, and the time the status took.
    assert max(a for a in ages if a is not None) < 3.0
