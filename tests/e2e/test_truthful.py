"""What the bot says during an outage must be true: held against the sandbox's independent data
plane (ground truth), with the watch running.

- the seed's literal configuration: a us-east outage leaves North America on the fallback, which is
  us-east itself; the bot says its users get errors and raises RTO Exceeded, and never claims a
  failover that did not happen;
- plain outages and recoveries are never called gray failures, in the channel or in status;
- drains and drills, quick restores and origin drains included, open no incident.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.db.engine import sessionmaker
from bot.db.models import Incident, TimelineEvent

from ..conftest import SEED_LITERAL, edge, eventually
from .conftest import Ops

US, EU = "foundation-us-east", "foundation-eu-west"


async def kinds(ops: Ops) -> list[str]:
    async with sessionmaker(ops.bot.engine)() as session:
        return [e.kind for e in await session.scalars(select(TimelineEvent))]


async def incidents(ops: Ops) -> list[Incident]:
    async with sessionmaker(ops.bot.engine)() as session:
        return list(await session.scalars(select(Incident)))


@pytest.mark.parametrize("watching", [SEED_LITERAL], indirect=True)
async def test_seed_literal_us_east_outage_says_users_get_errors_and_exceeds_the_rto(
    ops: Ops,
) -> None:
    await ops.world.gateways["us-east"].set_mode("down")

    async def rto_exceeded() -> bool:
        return "RTOExceeded" in await kinds(ops)

    await eventually(rto_exceeded, within=15)  # rto_alert is 6 s in this fast world

    async def rto_posted() -> bool:  # replies for one pool wait out the 10 s flap window
        return any("🔴 RTO Exceeded · us-east" in m for m in ops.channel())

    await eventually(rto_posted, within=25)
    # Ground truth: North America is on the fallback us-east and gets Cloudflare's 521.
    assert await edge(ops.world, "WNAM") == (521, US)
    assert await edge(ops.world, "WEU") == (200, EU)
    channel = ops.channel()
    said = "\n".join(channel)
    assert "failed over" not in said and "Failover Triggered" not in said
    assert "→ eu-west" not in said
    assert "WNAM ENAM NSAM SSAM have had no healthy pool for 6 s" in said
    assert "🔴 No Healthy Pool · us-east" in said
    assert "no failover: us-east is their own pool" in said
    assert (
        "WNAM ENAM NSAM SSAM: Cloudflare sends them to the fallback us-east, which is unhealthy, "
        "so users get errors" in channel[0]
    )
    assert {"NoHealthyPool", "RTOExceeded"} <= set(await kinds(ops))
    verdict = (await ops.say("status")).splitlines()[0]
    assert "WNAM ENAM NSAM SSAM have no healthy pool" in verdict and "failed over" not in verdict
    check = await ops.say("check")
    assert "failover path of WNAM ENAM NSAM SSAM: us-east → fallback us-east: no failover" in check
    whatif = await ops.say("whatif eu-west")
    assert "WEU EEU ME NAF SAF: eu-west → the fallback us-east" in whatif


async def test_plain_outages_and_recoveries_are_never_gray_failures(ops: Ops) -> None:
    gateways = ops.world.gateways
    for mode in ("down", "degraded", "down"):
        await gateways["us-east"].set_mode(mode)

        async def failed_over() -> bool:
            return await edge(ops.world, "WNAM") == (200, EU)

        await eventually(failed_over, within=10)
        await gateways["us-east"].set_mode("healthy")
        # Right after the heal the probes pass and Cloudflare has not seen it yet: noticing.
        verdict = (await ops.say("status")).splitlines()[0]
        assert "gray failure" not in verdict

        async def back() -> bool:
            return await edge(ops.world, "WNAM") == (200, US)

        await eventually(back, within=10)
    await eventually(lambda: _all_healthy(ops), within=10)
    assert "GrayFailure" not in await kinds(ops)
    assert not any("Gray Failure" in m for m in ops.channel())


async def _all_healthy(ops: Ops) -> bool:
    return (await ops.say("status")).startswith("✅ all healthy")


async def test_quick_restores_and_origin_drains_open_no_incident(ops: Ops) -> None:
    for n in range(1, 4):
        await ops.say(f"drain eu-west --for 1h quick {n}")
        await ops.press("Drain eu-west")

        async def drained() -> bool:
            return not await ops.pool_enabled("eu-west")

        await eventually(drained, within=5)
        assert "Restoring eu-west" in await ops.say("restore eu-west")  # before a Cloudflare read

        async def rejoined(n: int = n) -> bool:
            return sum("serves WEU EEU ME NAF SAF again" in m for m in ops.channel()) >= n

        await eventually(rejoined, within=20)

        async def allowed() -> bool:  # the same pool waits out the settle time (5 s here)
            return "too-soon" not in await ops.say("drain eu-west --dry-run")

        await eventually(allowed, within=10, every=1)
    # One origin of a one-origin pool: Cloudflare marks the pool unhealthy, traffic moves.
    await ops.say("drain apac-sg --origin gateway-apac-sg --for 1h swap the box")
    await ops.press("Drain gateway-apac-sg")

    async def moved() -> bool:
        return await edge(ops.world, "SEAS") == (200, US)

    await eventually(moved, within=10)
    await ops.say("restore apac-sg")

    async def home() -> bool:
        return await edge(ops.world, "SEAS") == (200, "foundation-apac-sg")

    await eventually(home, within=10)
    await eventually(lambda: _all_healthy(ops), within=10)
    assert await incidents(ops) == []
    assert not any("Incident #" in m for m in ops.channel())
    channel = "\n".join(ops.channel())
    assert "Cloudflare sends OC SAS SEAS NEAS to us-east" in channel  # in the drain's thread
