"""The sandbox's stand-ins answer as the real things do."""

from __future__ import annotations

from pathlib import Path

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.fleet import load_fleet
from bot.sandbox.gateways import COLO_HEADER as COLO
from bot.sandbox.world import Sandbox

from ..conftest import CONFIG


async def test_gateway_body_is_the_compact_contract(world: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(world.gateways["us-east"].url + "/health")
        via_edge = await http.get(world.gateways["us-east"].url + "/health", headers={COLO: "LHR"})
    assert resp.status_code == 200
    assert resp.text.startswith('{"timestamp":"')
    # As the seed's gateway: `region` is the edge data center (cf.colo), IAD when direct.
    assert (
        '"status":"healthy","region":"IAD","checks":{"d1":"ok","kv":"ok","services":"ok"}}'
        in resp.text
    )
    assert via_edge.json()["region"] == "LHR"
    assert resp.headers["X-Gateway-Region"] == via_edge.headers["X-Gateway-Region"] == "us-east"


async def test_the_public_rule_reads_the_deployment_header(world: Sandbox) -> None:
    public = load_fleet(world.config_path).public
    assert public is not None and public.served_by is not None
    assert public.served_by.header == "X-Gateway-Region"
    assert world.cloudflare.monitors[world.cloudflare.monitor_id]["header"] == {}


async def test_the_monitor_header_reaches_the_stand_in(tmp_path: Path) -> None:
    header = {"Host": ["api.erlvinc.com"]}
    world = Sandbox(CONFIG, tmp_path, monitor_header=header)
    try:
        assert world.cloudflare.monitors[world.cloudflare.monitor_id]["header"] == header
    finally:
        await world.close()


async def test_control_rejects_unknown_region_and_mode(world: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        listing = (await http.get(f"{world.control.url}/gateways")).json()
        assert listing["eu-west"]["mode"] == "healthy"
        bad_region = await http.post(f"{world.control.url}/gateways/mars", json={"mode": "down"})
        assert (
            bad_region.status_code == 404
            and "known: us-east, eu-west, apac-sg" in bad_region.json()["error"]
        )
        bad_mode = await http.post(f"{world.control.url}/gateways/eu-west", json={"mode": "melted"})
        assert bad_mode.status_code == 400 and "unknown mode 'melted'" in bad_mode.json()["error"]
        down = await http.post(f"{world.control.url}/gateways/eu-west", json={"mode": "down"})
        assert down.json()["mode"] == "down"
        try:
            await http.get(world.gateways["eu-west"].url + "/health")
            raise AssertionError("a down gateway must refuse connections")
        except httpx.ConnectError:
            pass


async def test_slack_web_api_through_the_sdk(world: Sandbox) -> None:
    client = AsyncWebClient(token=world.bot_token, base_url=world.slack.api_url)
    posted = await client.chat_postMessage(channel="C1", text="Pool Down", blocks=[])
    await client.chat_update(channel="C1", ts=posted["ts"], text="Pool Down (updated)")
    assert [m["text"] for m in world.slack.channels["C1"]] == ["Pool Down (updated)"]
    assert [c.method for c in world.slack.calls] == ["chat.postMessage", "chat.update"]
    stranger = AsyncWebClient(token="xoxb-wrong", base_url=world.slack.api_url)
    try:
        await stranger.auth_test()
        raise AssertionError("a wrong token must be refused")
    except SlackApiError as exc:
        assert exc.response["error"] == "invalid_auth"
