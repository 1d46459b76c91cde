"""The seed's scenarios on the sandbox: Cloudflare's monitor notices, the data plane moves users."""

from __future__ import annotations

import httpx

from bot.sandbox.dataplane import GEO_HEADER
from bot.sandbox.render import render_message
from bot.userview import served_by

from ..conftest import Served, eventually


async def serving(served: Served, geo: str) -> tuple[int, str | None, str | None]:
    """(status, serving region, Retry-After) for a user in ``geo`` now."""
    public = served.bot.fleet.public
    assert public is not None
    async with httpx.AsyncClient() as http:
        resp = await http.get(public.url, headers={GEO_HEADER: geo})
    region, _ = served_by(public.served_by, resp.headers, resp.content)
    return resp.status_code, region, resp.headers.get("Retry-After")


async def test_single_region_outage_fails_over_and_rejoins(served: Served) -> None:
    assert await serving(served, "WNAM") == (200, "us-east", None)
    await served.world.gateways["us-east"].set_mode("down")

    async def wnam_on_eu_west() -> bool:
        return await serving(served, "WNAM") == (200, "eu-west", None)

    rto = await eventually(wnam_on_eu_west, within=10)
    assert rto < 30  # the seed's target; the monitor checks every second here
    [reply] = (await served.user.command("status")).replies
    verdict = reply["text"]
    assert "us-east down: connection refused" in verdict
    assert "traffic of WNAM ENAM NSAM SSAM failed over to eu-west" in verdict
    shown = render_message(reply)
    assert "Cloudflare: unhealthy: TCP connection failed" in shown
    assert "eu-west ← WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF" in shown
    assert "relay WNAM: HTTP 200" in shown and "served by eu-west" in shown

    await served.world.gateways["us-east"].set_mode("healthy")

    async def wnam_home() -> bool:
        return await serving(served, "WNAM") == (200, "us-east", None)

    assert await eventually(wnam_home, within=10) < 60  # rejoin target


async def test_multi_region_outage_then_the_fallback_answers_503_with_retry_after(
    served: Served,
) -> None:
    gateways = served.world.gateways
    await gateways["us-east"].set_mode("down")
    await gateways["eu-west"].set_mode("down")

    async def all_on_apac() -> bool:
        return all([(await serving(served, g))[1] == "apac-sg" for g in ("WNAM", "WEU", "SEAS")])

    await eventually(all_on_apac, within=10)
    await gateways["apac-sg"].set_mode("degraded", check="d1")

    async def exhausted() -> bool:
        status, _, retry_after = await serving(served, "WEU")
        return status == 503 and retry_after is not None

    await eventually(exhausted, within=10)
    [reply] = (await served.user.command("status")).replies
    verdict = reply["text"]
    assert (
        "traffic of WNAM ENAM NSAM SSAM WEU EEU ME NAF SAF OC SAS SEAS NEAS falls back to us-east"
        in verdict
    )
    assert "users at relay WEU get HTTP 503" in verdict
    shown = render_message(reply)
    assert "on the fallback pool: no healthy pool left" in shown
    assert "Retry-After 30" in shown
