"""The Cloudflare stand-in counts each token's calls as Cloudflare's API limit does: the
``Ratelimit`` and ``Ratelimit-Policy`` headers on every answer, then 429s with ``Retry-After``
and every call blocked until the block is over (fundamentals/api/reference/limits/)."""

from __future__ import annotations

import httpx

from bot.sandbox.cloudflare import RateLimiter
from bot.sandbox.world import Sandbox


def test_the_window_the_block_and_the_headers_on_a_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(limit=3, window=60, block=300, clock=lambda: now[0])
    assert limiter.headers("t") == {
        "Ratelimit": '"default";r=3;t=60',
        "Ratelimit-Policy": '"default";q=3;w=60',
    }
    for _ in range(3):
        assert limiter.spend("t") is None
    now[0] = 20.0
    assert limiter.headers("t")["Ratelimit"] == '"default";r=0;t=40'
    assert limiter.spend("t") == 300  # the 4th: blocked for 5 minutes
    assert limiter.headers("t", 300)["Retry-After"] == "300"
    assert limiter.spend("other") is None  # per token
    now[0] = 319.0
    assert limiter.spend("t") == 1.0  # still blocked, whatever the window
    now[0] = 320.0
    assert limiter.spend("t") is None  # over: a new window
    assert limiter.headers("t")["Ratelimit"] == '"default";r=2;t=60'
    assert limiter.state("t")["calls"] == 4


async def test_every_answer_says_what_is_left_and_going_over_blocks(world: Sandbox) -> None:
    cf = world.cloudflare
    auth = {"Authorization": f"Bearer {cf.token}"}
    pools = f"{cf.base_url}/accounts/{cf.account_id}/load_balancers/pools"
    async with httpx.AsyncClient() as http:
        set_limit = await http.post(
            f"{cf.server.url}/_sandbox/ratelimit", json={"limit": 2, "window": 60, "block": 30}
        )
        assert set_limit.json()["limit"] == 2
        first = await http.get(pools, headers=auth)
        assert first.status_code == 200
        assert first.headers["Ratelimit"] == '"default";r=1;t=60'
        assert first.headers["Ratelimit-Policy"] == '"default";q=2;w=60'
        # A fault's answer counts too, and carries the headers.
        await http.post(f"{cf.server.url}/_sandbox/faults", json={"kind": "500", "times": 1})
        failed = await http.get(pools, headers=auth)
        assert failed.status_code == 500 and failed.headers["Ratelimit"].startswith(
            '"default";r=0;'
        )
        over = await http.get(pools, headers=auth)
        assert over.status_code == 429
        assert over.headers["Retry-After"] == "30"
        assert over.json()["errors"][0]["code"] == 1015
        blocked = await http.patch(f"{pools}/x", headers=auth, json={"enabled": True})
        assert blocked.status_code == 429  # every call, writes included
        # A wrong token is refused before it is counted: it is nobody's budget.
        assert (await http.get(pools, headers={"Authorization": "Bearer no"})).status_code == 401
        assert "Ratelimit" not in (await http.get(pools)).headers
        state = (await http.get(f"{cf.server.url}/_sandbox/ratelimit")).json()
    assert state["calls"] == 2 and state["in_window"] == 2 and 29 < state["blocked_for"] <= 30
