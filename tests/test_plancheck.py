"""`/failover check` on a pool whose origin is enabled but failing: the fix is to look at the
origin, not to enable what is already enabled."""

from __future__ import annotations

from bot.sandbox.cloudflare import cf_id
from bot.sandbox.render import render_message

from .conftest import Served, eventually


def pool_line(shown: str, pool: str) -> list[str]:
    """The pool's line and its fix line, as /failover check renders them."""
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if f"pool {pool}" in line)
    return lines[at : at + 2]


async def test_an_enabled_origin_that_fails_is_to_be_looked_at(served: Served) -> None:
    world = served.world
    region = served.bot.fleet.regions["apac-sg"]
    pool_id = cf_id("pool", region.pool)
    await world.gateways["apac-sg"].set_mode("erroring")

    async def failing() -> bool:
        return world.cloudflare.pool_health(pool_id) is False

    await eventually(failing, within=10)
    [reply] = (await served.user.command("check")).replies
    line, fix = pool_line(render_message(reply), region.pool)
    assert line.startswith(f"❌ pool {region.pool} (apac-sg): origin ")
    assert "fails Cloudflare's check (Response code mismatch error)" in line
    assert (
        "fix: look at the origin itself: `/failover status apac-sg` shows what its health " in fix
    )
    assert "enable" not in fix


async def test_a_disabled_pool_is_still_to_be_enabled(served: Served) -> None:
    region = served.bot.fleet.regions["eu-west"]
    lb = served.bot.loadbalancer
    assert lb is not None
    await lb.set_pool_enabled(cf_id("pool", region.pool), False)
    [reply] = (await served.user.command("check")).replies
    line, fix = pool_line(render_message(reply), region.pool)
    assert "the pool is disabled" in line
    assert "fix: enable the pool (`/failover restore` if a drain holds it)" in fix
    assert "look at the origin" not in fix, line
