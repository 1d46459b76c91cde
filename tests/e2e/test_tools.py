"""`failover-bot discover` and `failover-bot relay` as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from bot.fleet import load_fleet
from bot.sandbox.servers import free_port
from bot.sandbox.world import Sandbox

from ..conftest import ROOT, eventually

BASE_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_", "FAILOVER_"))
}


def cloudflare_env(world: Sandbox) -> dict[str, str]:
    cf = world.cloudflare
    return {
        "CLOUDFLARE_API_TOKEN": cf.token,
        "CLOUDFLARE_ACCOUNT_ID": cf.account_id,
        "CLOUDFLARE_ZONE_ID": cf.zone_id,
        "CLOUDFLARE_BASE_URL": cf.base_url,
    }


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env={**BASE_ENV, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_discover_writes_a_topology_that_matches_the_live_account(
    world: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "discovered.toml"
    code, stdout, stderr = await run(
        "discover", "--hostname", "api.erlvinc.com", "--out", str(out), env=cloudflare_env(world)
    )
    assert code == 0, stderr
    assert stdout.strip() == f"{out}: 3 regions written from api.erlvinc.com"
    found, plan = load_fleet(out), load_fleet(world.config_path)
    assert list(found.regions) == ["us-east", "eu-west", "apac-sg"]
    assert [r.pool for r in found.regions.values()] == [r.pool for r in plan.regions.values()]
    assert found.load_balancer.default_pools == plan.load_balancer.default_pools
    assert found.load_balancer.fallback_pool == "us-east"
    assert found.load_balancer.region_pools == plan.load_balancer.region_pools
    assert (found.monitor.path, found.monitor.expected_body) == ("/health", '"status":"healthy"')
    again = await run(
        "discover",
        "--out",
        str(out),
        env=cloudflare_env(world) | {"FAILOVER_CONFIG": str(world.config_path)},
    )
    assert again[0] == 2 and "exists: choose another --out, or add --force" in again[2]


async def test_discover_with_a_token_that_may_not_read(world: Sandbox, tmp_path: Path) -> None:
    env = cloudflare_env(world) | {"CLOUDFLARE_API_TOKEN": "wrong"}
    code, _, stderr = await run(
        "discover", "--hostname", "api.erlvinc.com", "--out", str(tmp_path / "x.toml"), env=env
    )
    assert code == 2
    assert stderr.strip() == (
        "failover-bot: Cloudflare rejected the API token while reading the load balancer: "
        "check CLOUDFLARE_API_TOKEN"
    )


async def test_relay_reports_what_users_there_get(world: Sandbox) -> None:
    port = free_port()
    env = {"FAILOVER_CONFIG": str(world.config_path), "RELAY_TOKEN": "s3cret"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "relay", "--geo", "weu", "--port", str(port),
        cwd=ROOT, env={**BASE_ENV, **env}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                try:
                    return bool(
                        (await http.get(f"{url}/healthz")).json() == {"ok": True, "geo": "WEU"}
                    )
                except httpx.ConnectError:
                    return False

            await eventually(up, within=15)
            assert (await http.get(f"{url}/check")).status_code == 401
            report = (
                await http.get(f"{url}/check", headers={"Authorization": "Bearer s3cret"})
            ).json()
        assert report["status"] == 200 and report["region"] == "eu-west" and report["geo"] == "WEU"
        assert report["latency"] > 0 and report["error"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
