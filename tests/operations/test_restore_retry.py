"""Restores are never held back by failing reads: a drain's restore through the real adapter and
the Cloudflare stand-in failing (its reads failing, the read breaker open, its PATCHes 500),
landing as soon as Cloudflare takes it; a drill's restore retried inside the drill, and a
stopping drill's left to the next pass; each with the real cause in the journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cloudflare_api.cached import CachedLoadBalancer
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.cloudflare_api.retry import RetryPolicy
from bot.errors import ProviderUnavailable
from bot.fleet import Fleet, Targets, load_fleet
from bot.monitor import MonitorState, PoolState, PoolTrack
from bot.operations import run
from bot.operations.drain import DrainDriver
from bot.operations.run import Drills
from bot.operations.state import Restore
from bot.operations.workflow import Operations
from bot.safety import Proposal
from bot.sandbox.world import Sandbox

from ..conftest import eventually
from ..fakes import ListClock, RecordingNotifier, UsersView
from ..reading import journal, operation
from .conftest import Rig

EU = "foundation-eu-west"
# Quick pauses, for a test: the bot's are 0.5 s growing to 4 s.
QUICK = RetryPolicy(first=0.05, factor=2.0, cap=0.2)


@dataclass
class Live:
    world: Sandbox
    fleet: Fleet
    adapter: CloudflareLoadBalancer
    lb: CachedLoadBalancer
    ops: Operations
    driver: DrainDriver
    channel: RecordingNotifier

    async def fault(self, **body: object) -> None:
        async with httpx.AsyncClient() as http:
            url = f"{self.world.cloudflare.server.url}/_sandbox/faults"
            (await http.post(url, json=body)).raise_for_status()

    def enabled(self, pool: str) -> bool:
        cf = self.world.cloudflare
        return bool(next(p["enabled"] for p in cf.pools.values() if p["name"] == pool))


@pytest.fixture
async def live(world: Sandbox, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Live]:
    cf = world.cloudflare
    fleet = load_fleet(world.config_path)
    adapter = CloudflareLoadBalancer(
        cf.token, cf.account_id, cf.zone_id, base_url=cf.base_url, timeout=1.0
    )
    lb = CachedLoadBalancer(adapter, ttl=0.5)
    clock = ListClock()
    driver = DrainDriver(fleet, sessions, lb, clock)
    driver.restore_policy = QUICK.bounded(within=30)
    yield Live(
        world,
        fleet,
        adapter,
        lb,
        Operations(fleet, sessions, lb.fresh(), clock, "C0OPS"),
        driver,
        RecordingNotifier(clock),
    )
    await lb.aclose()


async def test_a_drain_restore_lands_as_soon_as_cloudflare_takes_it(live: Live) -> None:
    proposed = await live.ops.propose(Proposal("drain", "eu-west"), "patching", "U0OPERATOR")
    assert proposed.operation is not None
    op_id = proposed.operation.id
    await live.ops.confirm(op_id, "U0OPERATOR")
    await live.driver.drive(live.channel)
    assert not live.enabled(EU)
    assert (await live.ops.restore("eu-west", "U0OPERATOR"))[0] is Restore.RESTORING

    # Cloudflare breaks: reads and changes answer 500, and the read breaker has opened.
    await live.fault(kind="500", method="GET")
    await live.fault(kind="500", method="PATCH")
    for _ in range(5):
        live.adapter.breaker.failure()
    driving = asyncio.create_task(live.driver.drive(live.channel))
    await asyncio.sleep(1.0)
    assert not driving.done() and not live.enabled(EU)  # retrying
    await live.fault(kind="none")  # Cloudflare recovers

    async def enabled() -> bool:
        return live.enabled(EU)

    # Within the policy's longest pause (and one call), not the read breaker's 30 s.
    assert await eventually(enabled, within=5, every=0.01) < QUICK.cap + 0.5
    await asyncio.wait_for(driving, timeout=5)

    op = await operation(live.driver.sessions, op_id)
    assert op.state == "rejoining"
    lines = await journal(live.driver.sessions, op_id)
    pool_id = next(pid for pid, p in live.world.cloudflare.pools.items() if p["name"] == EU)
    cause = (
        f"the restore failed (Cloudflare failed (HTTP 500) while enabling pool {pool_id}): "
        "retrying until Cloudflare takes it"
    )
    assert lines.count(cause) == 1  # said once a minute, not at every attempt
    assert lines[-1].startswith("re-enabled after ")
    assert lines[-1].endswith(" attempts; watching for its regions to return")
    assert "restart" not in " ".join(lines)


# ---------------------------------------------------------------------- drills, on fakes


def quick(fleet: Fleet, hold: float = 30) -> Fleet:
    operations = fleet.operations.model_copy(update={"drill_hold": hold, "drill_sample": 0.005})
    return fleet.model_copy(
        update={"operations": operations, "targets": Targets(rto=0.5, rejoin=0.5)}
    )


@pytest.fixture(autouse=True)
def quick_safeguards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "SAFEGUARD_EVERY", 0.005)


def drills(rig: Rig) -> Drills:
    monitor = MonitorState(pools={r: PoolTrack(state=PoolState.HEALTHY) for r in rig.fleet.regions})
    fleet = quick(rig.fleet)
    driver = Drills(
        fleet, rig.sessions, rig.lb, UsersView(rig.lb, fleet), rig.clock, lambda: monitor, "C0OPS"
    )
    driver.restore_policy = QUICK
    return driver


async def reaches(rig: Rig, op_id: int, state: str) -> None:
    for _ in range(500):
        if (await operation(rig.sessions, op_id)).state == state:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"drill {op_id} never reached {state}")


def down() -> ProviderUnavailable:
    return ProviderUnavailable(f"Cloudflare failed (HTTP 500) while enabling pool {EU}")


async def test_a_drill_retries_its_restore_until_cloudflare_takes_it(rig: Rig) -> None:
    rig.lb.enabled_health = True
    driver = drills(rig)
    op_id = await rig.confirmed("drill", "eu-west")
    await driver.drive(rig.channel)
    await reaches(rig, op_id, "holding")
    rig.lb.fail_next("set_pool_enabled", times=3, error=down())
    await rig.ops.cancel(op_id, "U0OPERATOR")
    await asyncio.wait_for(asyncio.gather(*driver.tasks.values()), timeout=10)
    assert rig.lb.enabled("eu-west")
    assert rig.lb.changes.count(("set_pool_enabled", EU, "True")) == 4
    op = await operation(rig.sessions, op_id)
    assert op.state == "aborted"
    lines = await journal(rig.sessions, op_id)
    cause = (
        f"the restore failed (Cloudflare failed (HTTP 500) while enabling pool {EU}): "
        "retrying until Cloudflare takes it"
    )
    assert lines.count(cause) == 1
    assert "restored the saved configuration (after 4 attempts)" in lines
    assert lines[-1].startswith("ABORTED: cancelled by U0OPERATOR; RTO")
    assert not any("restart" in line for line in lines)  # the task never stopped


async def test_a_stopping_drill_tries_a_few_times_and_the_next_pass_restores_it(
    rig: Rig,
) -> None:
    driver = drills(rig)
    op_id = await rig.confirmed("drill", "eu-west")
    await driver.drive(rig.channel)
    await reaches(rig, op_id, "holding")
    rig.lb.fail_next("set_pool_enabled", times=5, error=down())
    driver.stopping = True  # the lease is lost: the drill stops at its next look
    task = driver.tasks[op_id]
    await asyncio.wait([task], timeout=10)
    assert isinstance(task.exception(), ProviderUnavailable)
    assert not rig.lb.enabled("eu-west")
    assert rig.lb.changes.count(("set_pool_enabled", EU, "True")) == run.STOPPING_ATTEMPTS
    stopped = "the bot stopped (a shutdown, or it lost its lease)"
    failure = f"Cloudflare failed (HTTP 500) while enabling pool {EU}"
    assert (await journal(rig.sessions, op_id))[-3:] == [
        f"stopping: {stopped}",
        f"the restore failed ({failure}): retrying until Cloudflare takes it",
        f"the restore failed ({failure}); the bot is stopping: the next pass retries it",
    ]
    driver.stopping = False  # the lease is back: the next pass

    await driver.drive(rig.channel)
    assert rig.lb.enabled("eu-west")
    op = await operation(rig.sessions, op_id)
    assert op.state == "interrupted"
    lines = await journal(rig.sessions, op_id)
    assert lines[-3:] == [
        f"the drill's run ended on an error ({failure}): restoring the saved configuration",
        "restored the saved configuration (after 3 attempts)",
        f"INTERRUPTED: {stopped}; the pool is enabled again",
    ]
