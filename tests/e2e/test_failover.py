"""The seed's scenarios and Cloudflare's routing cases, end to end, each held against the ground
truth: what the sandbox's data plane answers users (it routes by Cloudflare's documentation and
shares no code with the bot), and, separately, what the bot says about it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.sandbox.dataplane import GEO_HEADER
from bot.sandbox.render import render_message

from ..conftest import SEED_LITERAL, Served, edge, eventually

LITERAL = pytest.mark.parametrize("world", [SEED_LITERAL], indirect=True)
US, EU, AP = "foundation-us-east", "foundation-eu-west", "foundation-apac-sg"


async def status(served: Served, args: str = "") -> tuple[str, str]:
    """(the verdict, the whole reply as Slack shows it)."""
    [reply] = (await served.user.command(f"status {args}".strip())).replies
    return reply["text"], render_message(reply)


async def status_saying(served: Served, text: str, within: float = 10) -> tuple[str, str]:
    """The first status whose verdict says ``text``: status answers from a round shared for a
    second and Cloudflare's view cached for a couple, so a change shows within a few."""
    said: list[tuple[str, str]] = []

    async def says() -> bool:
        said.append(await status(served))
        return text in said[-1][0]

    await eventually(says, within=within, every=0.5)
    return said[-1]


async def reaches(
    served: Served, geo: str, expected: tuple[int, str | None], within: float
) -> float:
    async def there() -> bool:
        return await edge(served.world, geo) == expected

    return await eventually(there, within=within)


async def test_single_region_outage_fails_over_and_rejoins(served: Served) -> None:
    assert await edge(served.world, "WNAM") == (200, US)
    await served.world.gateways["us-east"].set_mode("down")
    rto = await reaches(served, "WNAM", (200, EU), within=10)
    assert rto < 30  # the seed's target; the monitor checks every second here
    verdict, shown = await status(served)
    assert "us-east down: connection refused" in verdict
    assert "traffic of WNAM ENAM NSAM SSAM failed over to eu-west" in verdict
    assert "Cloudflare: unhealthy: TCP connection failed" in shown
    assert "eu-west ← WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF" in shown
    assert "relay WNAM: HTTP 200" in shown and "served by eu-west" in shown

    await served.world.gateways["us-east"].set_mode("healthy")
    assert await reaches(served, "WNAM", (200, US), within=10) < 60  # rejoin target


@LITERAL
async def test_seed_literal_us_east_outage_leaves_its_users_on_the_dead_fallback(
    served: Served,
) -> None:
    await served.world.gateways["us-east"].set_mode("down")
    # Truth: North America stays on the fallback, us-east itself, and gets Cloudflare's 521.
    await reaches(served, "WNAM", (521, US), within=10)
    assert await edge(served.world, "WEU") == (200, EU)
    verdict, _ = await status(served)  # at once: Cloudflare's monitor needs 2 checks to notice
    assert "Cloudflare has not noticed yet" in verdict and "gray failure" not in verdict
    stranded = (
        "WNAM ENAM NSAM SSAM have no healthy pool; Cloudflare sends them to the fallback us-east, "
        "which is unhealthy, so users get errors"
    )

    async def noticed() -> bool:
        return stranded in (await status(served))[0]

    await eventually(noticed, within=10)
    assert await edge(served.world, "WNAM") == (521, US)  # still the truth once it has noticed
    verdict, shown = await status(served)
    assert verdict.startswith(":rotating_light: Failover status: us-east down: connection refused")
    assert "users at relay WNAM get HTTP 521" in verdict
    assert "failed over" not in verdict
    assert "no healthy pool, on the unhealthy fallback: users get errors" in shown
    # A 521 is Cloudflare's own page: nothing names a region, and the bot does not guess one.
    assert "relay WNAM: HTTP 521" in shown
    assert "served by Cloudflare's edge: the origin refused the connection" in shown


@LITERAL
async def test_seed_literal_eu_west_outage_goes_to_the_healthy_fallback(served: Served) -> None:
    await served.world.gateways["eu-west"].set_mode("degraded", check="d1")
    await reaches(served, "WEU", (200, US), within=10)
    verdict, shown = await status(served)
    assert "eu-west down: d1 error" in verdict
    assert "traffic of WEU EEU ME NAF SAF failed over to the fallback us-east" in verdict
    assert "on the fallback: no healthy pool in their list (from eu-west)" in shown


async def test_multi_region_outage_then_all_down(served: Served) -> None:
    gateways = served.world.gateways
    await gateways["us-east"].set_mode("down")
    await gateways["eu-west"].set_mode("down")
    for geo in ("WNAM", "WEU", "SEAS"):
        await reaches(served, geo, (200, AP), within=10)
    await status_saying(
        served, "traffic of WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF failed over to apac-sg"
    )

    await gateways["apac-sg"].set_mode("degraded", check="d1")
    # Truth: every geo region falls to the fallback us-east, whose origin refuses: 521, as the
    # edge passes it on; no Retry-After is invented (the seed's table expected one).
    await reaches(served, "WEU", (521, US), within=10)
    async with httpx.AsyncClient() as http:
        resp = await http.get(served.world.dataplane.url + "/health", headers={GEO_HEADER: "OC"})
    assert resp.status_code == 521 and "Retry-After" not in resp.headers
    verdict, _ = await status_saying(
        served,
        "WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF OC SAS SEAS NEAS have no healthy pool; Cloudflare "
        "sends them to the fallback us-east, which is unhealthy, so users get errors",
    )
    assert "users at relay WEU get HTTP 521" in verdict


@LITERAL
async def test_a_disabled_fallback_answers_530(served: Served) -> None:
    lb = served.bot.loadbalancer
    assert lb is not None
    us = next(p for p in await lb.pools() if p.name == US)
    await lb.set_pool_enabled(us.id, False)

    async def error_1016() -> bool:
        async with httpx.AsyncClient() as http:
            resp = await http.get(
                served.world.dataplane.url + "/health", headers={GEO_HEADER: "ENAM"}
            )
        return resp.status_code == 530 and "1016" in resp.text

    await eventually(error_1016, within=5)
    verdict, _ = await status(served)
    assert (
        "WNAM ENAM NSAM SSAM have no healthy pool; the fallback us-east is disabled, so users "
        "get Cloudflare's 530 (error 1016)" in verdict
    )


@pytest.mark.parametrize("world", [{"monitor_interval": 30.0}], indirect=True)
async def test_a_re_enabled_pool_gets_no_traffic_until_it_is_checked(served: Served) -> None:
    # Cloudflare's monitor checks every 30 s here, so the unknown health lasts until check_now().
    lb = served.bot.loadbalancer
    assert lb is not None
    eu = next(p for p in await lb.pools() if p.name == EU)
    await lb.set_pool_enabled(eu.id, False)
    await reaches(served, "WEU", (200, US), within=5)
    await lb.set_pool_enabled(eu.id, True)
    assert (await lb.pool(eu.id)).healthy is None  # Cloudflare has not checked it yet
    await asyncio.sleep(1)  # past the propagation delay: enabled at the edge, still unknown
    assert await edge(served.world, "WEU") == (200, US)
    _, shown = await status(served)
    assert "Cloudflare: health unknown until its first check since it was enabled" in shown
    assert "us-east ← WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF" in shown
    assert "WEU EEU ME NAF SAF: failed over from eu-west" in shown
    await served.world.cloudflare.check_now()
    await reaches(served, "WEU", (200, EU), within=5)
    await status_saying(served, "all healthy")
