"""The sandbox's Cloudflare (monitor and data plane) against Cloudflare's documented behaviour.

Ground truth only: real HTTP requests to the data plane with ``X-Geo-Region``, the stand-in's
API and the gateways' request counters. No bot code is involved (the oracle must be able to
disagree with the bot's routing and probes). The monitor runs rounds on demand (``check_now``)
unless a test wants the running loop, so that counts and streaks are exact.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.sandbox.cloudflare import USER_AGENT, CloudflareStandIn
from bot.sandbox.dataplane import COUNTRY_HEADER, GEO_HEADER, POOL_HEADER, DataPlane
from bot.sandbox.gateways import REGION_HEADER, Gateway
from bot.sandbox.world import Sandbox

from ..conftest import CONFIG, ROOT, eventually

HOME = {  # the seed's geo steering: every geo region lists its home pool only
    **dict.fromkeys(("WNAM", "ENAM", "NSAM", "SSAM"), "us-east"),
    **dict.fromkeys(("WEU", "EEU", "ME", "NAF", "SAF"), "eu-west"),
    **dict.fromkeys(("OC", "SAS", "SEAS", "NEAS"), "apac-sg"),
}


@dataclass
class Stage:
    world: Sandbox
    api: httpx.AsyncClient
    users: httpx.AsyncClient

    @property
    def cf(self) -> CloudflareStandIn:
        return self.world.cloudflare

    @property
    def plane(self) -> DataPlane:
        return self.world.dataplane

    @property
    def gateways(self) -> dict[str, Gateway]:
        return self.world.gateways

    @property
    def monitor(self) -> dict[str, Any]:
        return self.cf.monitors[self.cf.monitor_id]

    def pool_id(self, region: str) -> str:
        return next(pid for pid, p in self.cf.pools.items() if p["name"] == f"foundation-{region}")

    async def get(self, geo: str, country: str | None = None) -> httpx.Response:
        headers = {GEO_HEADER: geo} | ({COUNTRY_HEADER: country} if country else {})
        return await self.users.get(f"{self.plane.url}/health", headers=headers)

    async def patch_lb(self, body: dict[str, Any]) -> httpx.Response:
        return await self.api.patch(
            f"/zones/{self.cf.zone_id}/load_balancers/{self.cf.lb_id}", json=body
        )

    async def patch_pool(self, region: str, body: dict[str, Any]) -> httpx.Response:
        url = f"/accounts/{self.cf.account_id}/load_balancers/pools/{self.pool_id(region)}"
        return await self.api.patch(url, json=body)

    async def pool(self, region: str) -> dict[str, Any]:
        url = f"/accounts/{self.cf.account_id}/load_balancers/pools/{self.pool_id(region)}"
        result: dict[str, Any] = (await self.api.get(url)).json()["result"]
        return result

    async def pool_health(self, region: str) -> dict[str, Any]:
        url = f"/accounts/{self.cf.account_id}/load_balancers/pools/{self.pool_id(region)}/health"
        result: dict[str, Any] = (await self.api.get(url)).json()["result"]
        return result

    async def regions(self, chains: dict[str, list[str]]) -> None:
        """Change some geo regions' lists (PATCH replaces the whole map, so send all of it)
        and wait until the edge applies them."""
        current = dict(self.cf.lbs[self.cf.lb_id]["region_pools"])
        current |= {g: [self.pool_id(r) for r in names] for g, names in chains.items()}
        assert (await self.patch_lb({"region_pools": current})).status_code == 200
        await self.settle()

    async def checks(self, rounds: int) -> None:
        for _ in range(rounds):
            await self.cf.check_now()

    async def settle(self) -> None:
        await asyncio.sleep(self.cf.propagation + 0.1)


def served_by(resp: httpx.Response) -> tuple[int, str | None, str | None]:
    """(status, the pool the edge chose, the deployment that answered)."""
    return resp.status_code, resp.headers.get(POOL_HEADER), resp.headers.get(REGION_HEADER)


MakeStage = Callable[..., Awaitable[Stage]]


@pytest.fixture
async def make_stage(tmp_path: Path) -> AsyncIterator[MakeStage]:
    """Gateways, the Cloudflare stand-in and its data plane, with the seed's literal geo map.

    The monitor loop waits ``interval`` between rounds (an hour unless asked: tests run the
    rounds themselves); changes reach the edge after ``propagation``.
    """
    stages: list[Stage] = []

    async def make(
        *,
        interval: float = 3600.0,
        propagation: float = 0.2,
        monitor_header: dict[str, list[str]] | None = None,
    ) -> Stage:
        world = Sandbox(
            CONFIG,
            tmp_path / f"world{len(stages)}",
            monitor_interval=interval,
            propagation=propagation,
            monitor_header=monitor_header,
        )
        for gateway in world.gateways.values():
            await gateway.start()
        await world.cloudflare.start()
        await world.dataplane.start()
        cf = world.cloudflare
        stage = Stage(
            world,
            httpx.AsyncClient(
                base_url=cf.base_url, headers={"Authorization": f"Bearer {cf.token}"}
            ),
            httpx.AsyncClient(timeout=10.0),
        )
        stages.append(stage)
        # The seed's monitor, stated here so that the tests do not follow failover.toml's edits;
        # a 1 s timeout keeps the slow cases short.
        stage.monitor.update(
            path="/health",
            expected_codes="200",
            expected_body='"status":"healthy"',
            timeout=1,
            retries=2,
            consecutive_down=2,
            consecutive_up=2,
        )
        await stage.regions({g: [home] for g, home in HOME.items()})
        return stage

    yield make
    for stage in stages:
        await stage.api.aclose()
        await stage.users.aclose()
        await stage.world.close()


# ----------------------------------------------------------------------------- steering


async def test_seed_literal_map_leaves_a_region_on_its_fallback(make_stage: MakeStage) -> None:
    stage = await make_stage()
    await stage.gateways["us-east"].set_mode("down")
    await stage.checks(2)
    await stage.settle()
    wnam = await stage.get("WNAM")
    # WNAM lists us-east only: the fallback, us-east itself, takes it whatever its health.
    assert served_by(wnam) == (521, "foundation-us-east", None)
    assert wnam.text == "error code: 521" and wnam.headers["cf-ray"].endswith("-SJC")
    assert served_by(await stage.get("WEU")) == (200, "foundation-eu-west", "eu-west")

    await stage.gateways["us-east"].set_mode("healthy")
    await stage.gateways["eu-west"].set_mode("down")
    await stage.checks(2)  # consecutive_up and consecutive_down are both 2
    await stage.settle()
    weu = await stage.get("WEU")
    assert served_by(weu) == (200, "foundation-us-east", "us-east")
    assert weu.json()["region"] == "LHR"  # the edge data center, not the deployment
    assert served_by(await stage.get("WNAM")) == (200, "foundation-us-east", "us-east")
    assert ("WEU", "foundation-us-east", 200) in stage.plane.served


async def test_a_listed_chain_fails_over_in_order(make_stage: MakeStage) -> None:
    stage = await make_stage()
    await stage.regions({"WNAM": ["us-east", "eu-west", "apac-sg"]})
    await stage.gateways["us-east"].set_mode("down")
    await stage.checks(2)
    await stage.settle()
    assert served_by(await stage.get("WNAM")) == (200, "foundation-eu-west", "eu-west")
    await stage.gateways["eu-west"].set_mode("degraded")
    await stage.checks(2)
    await stage.settle()
    assert served_by(await stage.get("WNAM")) == (200, "foundation-apac-sg", "apac-sg")
    # ENAM lists us-east alone: no chain, the fallback.
    assert served_by(await stage.get("ENAM")) == (521, "foundation-us-east", None)


async def test_all_pools_down_passes_the_fallback_answer_through(make_stage: MakeStage) -> None:
    stage = await make_stage()
    for gateway in stage.gateways.values():
        await gateway.set_mode("degraded", check="kv")
    await stage.checks(2)
    await stage.settle()
    for geo in ("WNAM", "WEU", "SEAS"):
        resp = await stage.get(geo)
        assert served_by(resp) == (503, "foundation-us-east", "us-east")
        assert '"status":"degraded"' in resp.text and '"kv":"error"' in resp.text
        assert "Retry-After" not in resp.headers  # the origin sent none; the edge adds none


async def test_a_disabled_fallback_that_is_chosen_gives_1016(make_stage: MakeStage) -> None:
    stage = await make_stage()
    assert (await stage.patch_pool("us-east", {"enabled": False})).status_code == 200
    await stage.settle()
    wnam = await stage.get("WNAM")
    assert served_by(wnam) == (530, None, None) and "error code: 1016" in wnam.text
    assert served_by(await stage.get("WEU")) == (200, "foundation-eu-west", "eu-west")
    assert ("WNAM", None, 530) in stage.plane.served


async def test_a_disabled_load_balancer_gives_1016(make_stage: MakeStage) -> None:
    stage = await make_stage()
    assert (await stage.patch_lb({"enabled": False})).status_code == 200
    await stage.settle()
    resp = await stage.get("WEU")
    assert served_by(resp) == (530, None, None) and resp.text == "error code: 1016"


async def test_pop_then_country_then_region_then_default(make_stage: MakeStage) -> None:
    stage = await make_stage()
    lb = {
        "country_pools": {"GB": [stage.pool_id("apac-sg")]},
        "region_pools": {"WEU": [stage.pool_id("eu-west")]},
    }
    assert (await stage.patch_lb(lb)).status_code == 200
    await stage.settle()
    assert served_by(await stage.get("WEU", "GB"))[1] == "foundation-apac-sg"
    assert served_by(await stage.get("WEU", "FR"))[1] == "foundation-eu-west"
    assert served_by(await stage.get("SEAS"))[1] == "foundation-us-east"  # default_pools[0]
    await stage.patch_lb({"pop_pools": {"LHR": [stage.pool_id("us-east")]}})  # WEU enters at LHR
    await stage.settle()
    assert served_by(await stage.get("WEU", "GB"))[1] == "foundation-us-east"


async def test_off_uses_default_pools_and_empty_policy_follows_the_maps(
    make_stage: MakeStage,
) -> None:
    stage = await make_stage()
    await stage.patch_lb({"steering_policy": "off"})
    await stage.settle()
    assert served_by(await stage.get("SEAS"))[1] == "foundation-us-east"
    await stage.gateways["us-east"].set_mode("down")
    await stage.checks(2)
    await stage.settle()
    assert served_by(await stage.get("SEAS"))[1] == "foundation-eu-west"  # next in order
    await stage.patch_lb({"steering_policy": ""})  # region_pools are set: it means geo
    await stage.settle()
    assert served_by(await stage.get("SEAS"))[1] == "foundation-apac-sg"


async def test_rules_empty_conditions_only_and_not_with_geo(make_stage: MakeStage) -> None:
    stage = await make_stage()
    path_rule = {"condition": 'http.request.uri.path contains "/x"', "overrides": {}}
    assert (await stage.patch_lb({"rules": [path_rule]})).status_code == 400
    always = {"condition": "", "overrides": {"default_pools": [stage.pool_id("apac-sg")]}}
    assert (await stage.patch_lb({"rules": [always]})).status_code == 400  # geo steering
    resp = await stage.patch_lb({"steering_policy": "off", "rules": [always]})
    assert resp.status_code == 200 and resp.json()["result"]["rules"] == [always]
    await stage.settle()
    assert served_by(await stage.get("WNAM"))[1] == "foundation-apac-sg"
    fixed = {"condition": "", "fixed_response": {"status_code": 418, "message_body": "teapot"}}
    await stage.patch_lb({"rules": [always, fixed]})
    await stage.settle()
    resp = await stage.get("WNAM")
    assert (resp.status_code, resp.text, resp.headers.get(POOL_HEADER)) == (418, "teapot", None)


async def test_weight_zero_origin_gets_no_traffic_but_is_checked(make_stage: MakeStage) -> None:
    stage = await make_stage()
    us, eu = stage.gateways["us-east"], stage.gateways["eu-west"]
    origins = [
        {
            "name": "gateway-us-east",
            "address": us.url.split("://")[1],
            "enabled": True,
            "weight": 0,
        },
        {"name": "gateway-extra", "address": eu.url.split("://")[1], "enabled": True, "weight": 1},
    ]
    assert (await stage.patch_pool("us-east", {"origins": origins})).status_code == 200
    before = us.requests
    await stage.checks(1)
    assert us.requests == before + 1  # weight 0 still gets health checks
    await stage.settle()
    answers = {served_by(await stage.get("WNAM")) for _ in range(20)}
    assert answers == {(200, "foundation-us-east", "eu-west")}


async def test_unknown_geo_is_a_400(make_stage: MakeStage) -> None:
    stage = await make_stage()
    resp = await stage.get("MARS")
    assert resp.status_code == 400 and "unknown geo region 'MARS'" in resp.json()["error"]


# ----------------------------------------------------------------------------- health


async def test_health_changes_reach_the_edge_after_propagation(make_stage: MakeStage) -> None:
    stage = await make_stage(propagation=0.6)
    await stage.regions({"WNAM": ["us-east", "eu-west"]})
    await stage.gateways["us-east"].set_mode("down")
    await stage.checks(2)
    marked = time.monotonic()
    assert (await stage.pool("us-east"))["healthy"] is False  # the API knows at once
    assert served_by(await stage.get("WNAM")) == (521, "foundation-us-east", None)  # edge not yet

    async def failed_over() -> bool:
        return served_by(await stage.get("WNAM"))[1] == "foundation-eu-west"

    await eventually(failed_over, within=3, every=0.05)
    assert time.monotonic() - marked >= 0.5


async def test_a_re_enabled_pool_is_unknown_until_checked(make_stage: MakeStage) -> None:
    stage = await make_stage()
    await stage.patch_pool("eu-west", {"enabled": False})
    enabled = (await stage.patch_pool("eu-west", {"enabled": True})).json()["result"]
    assert "healthy" not in enabled
    assert all("healthy" not in o and "failure_reason" not in o for o in enabled["origins"])
    pool = await stage.pool("eu-west")
    assert pool["enabled"] is True and "healthy" not in pool
    health = await stage.pool_health("eu-west")
    assert all(loc == {"origins": []} for loc in health["pop_health"].values())
    assert stage.cf.pool_healthy(stage.pool_id("eu-west")) is False
    await stage.settle()
    assert served_by(await stage.get("WEU"))[1] == "foundation-us-east"  # unknown counts as down

    await stage.checks(1)  # unknown health takes the first result (no consecutive_up)
    assert (await stage.pool("eu-west"))["healthy"] is True
    await stage.settle()
    assert served_by(await stage.get("WEU")) == (200, "foundation-eu-west", "eu-west")
    assert stage.cf.events == []  # unknown -> known is no status change


async def test_the_running_monitor_brings_a_re_enabled_pool_back(make_stage: MakeStage) -> None:
    stage = await make_stage(interval=2.0)  # the first round comes 2 s after the start
    await stage.patch_pool("eu-west", {"enabled": False})
    await stage.patch_pool("eu-west", {"enabled": True})
    await stage.settle()
    assert served_by(await stage.get("WEU"))[1] == "foundation-us-east"

    async def back() -> bool:
        return served_by(await stage.get("WEU"))[1] == "foundation-eu-west"

    await eventually(back, within=5)


async def test_a_disabled_pool_gets_no_health_checks(make_stage: MakeStage) -> None:
    stage = await make_stage()
    await stage.patch_pool("apac-sg", {"enabled": False})
    apac, us = stage.gateways["apac-sg"].requests, stage.gateways["us-east"].requests
    await stage.checks(2)
    assert stage.gateways["apac-sg"].requests == apac
    assert stage.gateways["us-east"].requests == us + 2


async def test_retries_follow_a_timeout_only(make_stage: MakeStage) -> None:
    stage = await make_stage()
    stage.monitor.update(retries=1, consecutive_down=1)
    gateway = stage.gateways["apac-sg"]
    for mode, reason, code in (
        ("degraded", "Response code mismatch error", 503),
        ("erroring", "Response code mismatch error", 500),
    ):
        await gateway.set_mode(mode)
        before = gateway.requests
        await stage.checks(1)
        assert gateway.requests == before + 1, mode  # a wrong answer is final
        [check] = (await stage.pool_health("apac-sg"))["pop_health"]["Singapore, SG"]["origins"]
        [(_, result)] = check.items()
        assert (result["failure_reason"], result["response_code"]) == (reason, code)

    await gateway.set_mode("slow", delay=1.6)
    before = gateway.requests
    await stage.checks(1)
    assert gateway.requests == before + 2  # the attempt and one retry, each timed out
    origin = (await stage.pool("apac-sg"))["origins"][0]
    assert origin["failure_reason"] == "HTTP timeout occurred"

    await gateway.set_mode("down")
    started = time.monotonic()
    await stage.checks(1)
    assert time.monotonic() - started < 0.9  # refused: no waiting for a timeout, no retry
    origin = (await stage.pool("apac-sg"))["origins"][0]
    assert (origin["healthy"], origin["failure_reason"]) == (False, "TCP connection failed")


async def test_expected_body_is_matched_case_insensitively(make_stage: MakeStage) -> None:
    stage = await make_stage()
    stage.monitor.update(expected_body='"STATUS":"Healthy"', consecutive_down=1)
    await stage.checks(1)
    assert (await stage.pool("eu-west"))["healthy"] is True
    await stage.gateways["eu-west"].set_mode("wrongbody")  # 200 without the substring
    await stage.checks(1)
    origin = (await stage.pool("eu-west"))["origins"][0]
    assert (origin["healthy"], origin["failure_reason"]) == (False, "Response body mismatch error")


async def test_consecutive_down_and_up_are_honoured(make_stage: MakeStage) -> None:
    stage = await make_stage()
    stage.monitor.update(consecutive_down=2, consecutive_up=3)
    gateway = stage.gateways["eu-west"]
    await gateway.set_mode("degraded")
    await stage.checks(1)
    assert (await stage.pool("eu-west"))["healthy"] is True
    await stage.checks(1)
    assert (await stage.pool("eu-west"))["healthy"] is False
    await gateway.set_mode("healthy")
    await stage.checks(2)
    assert (await stage.pool("eu-west"))["healthy"] is False
    await stage.checks(1)
    assert (await stage.pool("eu-west"))["healthy"] is True
    events = [e for e in stage.cf.events if e["pool"]["name"] == "foundation-eu-west"]
    assert [(e["pool"]["healthy"], e["origins"][0]["changed"]) for e in events] == [
        (False, True),
        (True, True),
    ]


async def test_the_monitor_sends_cloudflares_agent_and_the_host_asked_for(
    make_stage: MakeStage,
) -> None:
    header = {"User-Agent": ["failover-bot"], "Host": ["api.erlvinc.com"], "X-Probe": ["yes"]}
    stage = await make_stage(monitor_header=header)
    listed = await stage.api.get(f"/accounts/{stage.cf.account_id}/load_balancers/monitors")
    assert listed.json()["result"][0]["header"] == header  # stored and shown as given
    await stage.checks(1)
    seen = stage.gateways["us-east"].last_headers
    agent = USER_AGENT.format(pool_id=stage.pool_id("us-east")[:16])
    assert "Cloudflare-Traffic-Manager" in agent
    assert (seen["User-Agent"], seen["Host"], seen["X-Probe"]) == (agent, "api.erlvinc.com", "yes")
    # The endpoint's own Host header wins over the monitor's.
    origin = {
        "name": "gateway-us-east",
        "address": stage.gateways["us-east"].url.split("://")[1],
        "header": {"Host": ["us.erlvinc.com"]},
    }
    await stage.patch_pool("us-east", {"origins": [origin]})
    await stage.checks(1)
    assert stage.gateways["us-east"].last_headers["Host"] == "us.erlvinc.com"


async def test_a_gray_failure_is_healthy_to_the_monitor_only(make_stage: MakeStage) -> None:
    stage = await make_stage()
    await stage.gateways["apac-sg"].set_mode("gray", check="kv")
    await stage.checks(2)
    assert (await stage.pool("apac-sg"))["healthy"] is True
    await stage.settle()
    resp = await stage.get("SEAS")
    assert served_by(resp) == (503, "foundation-apac-sg", "apac-sg")
    assert resp.json()["region"] == "SIN"


def test_the_oracle_imports_nothing_from_the_bots_logic() -> None:
    forbidden = (
        "routing", "health", "monitor", "safety", "cloudflare_api", "status", "observations",
    )  # fmt: skip
    code = (
        "import sys, json, bot.sandbox.world, bot.sandbox.dataplane, bot.sandbox.cloudflare;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert [m for m in loaded if m.split(".")[:2] in [["bot", f] for f in forbidden]] == []
