"""`/failover status` from every angle, and `/failover check`, through the Slack path."""

from __future__ import annotations

import asyncio

import httpx

from bot.sandbox.render import render_message
from bot.sandbox.world import Sandbox

from .conftest import Served


async def fault(world: Sandbox, **body: object) -> None:
    async with httpx.AsyncClient() as http:
        (
            await http.post(f"{world.cloudflare.server.url}/_sandbox/faults", json=body)
        ).raise_for_status()


async def test_status_without_cloudflare_still_answers_with_the_probes(served: Served) -> None:
    await fault(served.world, kind="500")
    exchange = await served.user.command("status")
    [reply] = exchange.replies
    assert exchange.reply_seconds is not None and exchange.reply_seconds < 3.0
    shown = render_message(reply)
    assert "⚠️  Cloudflare's view is missing: " in shown
    assert "🟢 us-east (primary)" in shown and "`gateway-us-east` healthy" in shown
    assert "Routing" not in shown  # no routing table without Cloudflare's view


async def test_a_disabled_pool_is_shown_and_its_traffic_moves(served: Served) -> None:
    lb = served.bot.loadbalancer
    assert lb is not None
    pool = next(p for p in await lb.pools() if p.name == "foundation-apac-sg")
    await lb.set_pool_enabled(pool.id, False)
    [reply] = (await served.user.command("status apac-sg")).replies
    shown = render_message(reply)
    assert "⚪ apac-sg (tertiary) · pool `foundation-apac-sg` · disabled" in shown
    assert "Cloudflare: pool disabled (no traffic, no health checks)" in shown
    assert "OC SAS SEAS NEAS: failed over from apac-sg" in shown


async def test_check_passes_on_the_sandbox_as_planned(served: Served) -> None:
    [reply] = (await served.user.command("check")).replies
    shown = render_message(reply)
    assert shown.splitlines()[0] == "✅ api.erlvinc.com: 27 checks pass"
    assert "The plan as Cloudflare will run it (the live load balancer)" in shown
    assert (
        "failover path of WNAM ENAM NSAM SSAM: us-east → eu-west → apac-sg → fallback us-east"
        in shown
    )
    assert "which pool served a user: the header X-Gateway-Region names the deployment" in shown


async def test_check_says_what_differs_and_how_to_fix_it(served: Served) -> None:
    cf = served.world.cloudflare
    cf.monitors[cf.monitor_id]["path"] = "/healthz"
    lb_state = cf.lbs[cf.lb_id]
    lb_state["session_affinity"] = "none"
    del lb_state["region_pools"]["SEAS"]
    await fault(served.world, kind="events_forbidden")
    [reply] = (await served.user.command("check")).replies
    shown = render_message(reply)
    assert shown.splitlines()[0] == "❌ api.erlvinc.com: 4 of 27 checks fail"
    assert "❌ monitor method and path: live GET /healthz, plan GET /health" in shown
    assert "fix: edit the monitor (Traffic → Load Balancing → Manage Monitors)" in shown
    assert "❌ session affinity: live none, plan ip_cookie" in shown
    assert "❌ geo regions mapped: unmapped: SEAS (they use the default pools)" in shown
    assert "❌ health events: the API token lacks Analytics: Read" in shown
    assert "the bot carries on without them" in shown


async def test_check_takes_no_arguments(served: Served) -> None:
    [reply] = (await served.user.command("check now")).replies
    assert "`check` takes no arguments (got `now`)." in render_message(reply)


async def test_concurrent_status_requests_share_one_round(served: Served) -> None:
    status = served.bot.router.services.status
    calls = len(served.world.cloudflare.requests)
    probes = sum(g.requests for g in served.world.gateways.values())
    answers = await asyncio.gather(*(status.check() for _ in range(30)))
    assert all(a is answers[0] for a in answers)  # one round answered all thirty
    assert len(served.world.cloudflare.requests) - calls <= 3  # one read of the load balancer
    # Three origins probed once, four vantage points' requests reaching them, and the stand-in
    # monitor's own checks meanwhile: far from thirty rounds' worth.
    assert sum(g.requests for g in served.world.gateways.values()) - probes < 15


async def test_with_the_api_budget_spent_status_and_check_answer_from_the_cache(
    served: Served,
) -> None:
    """Going over Cloudflare's API limit blocks every call for 5 minutes
    (fundamentals/api/reference/limits/), so the last calls are kept for restores: status and
    check keep answering with the last view, saying why and how old, rather than losing
    Cloudflare's angle."""
    first = render_message((await served.user.command("status")).replies[0])
    assert "Cloudflare's view is missing" not in first
    async with httpx.AsyncClient() as http:
        url = f"{served.world.cloudflare.server.url}/_sandbox/ratelimit"
        (await http.post(url, json={"limit": 1, "window": 300, "block": 300})).raise_for_status()
    await served.bot.loadbalancer.monitors()  # type: ignore[union-attr]  # the last call allowed
    await asyncio.sleep(1.0)  # past the cache's reuse (the sandbox's propagation, 0.5 s)
    exchange = await served.user.command("status")
    assert exchange.reply_seconds is not None and exchange.reply_seconds < 2.5
    shown = render_message(exchange.replies[0])
    assert "Cloudflare's view: Cloudflare's API budget is nearly spent (0 of 1 calls" in shown
    assert "answered from the cache, " in shown
    assert "`gateway-us-east` healthy" in shown and "Routing" in shown  # the view is still there
    checked = render_message((await served.user.command("check")).replies[0])
    assert "The plan as Cloudflare will run it (the live load balancer; Cloudflare's API" in checked
    assert "answered from the cache, " in checked
