"""The sandbox's stand-ins answer as the real things do."""

from __future__ import annotations

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.world import Sandbox


async def test_gateway_body_is_the_compact_contract(world: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(world.gateways["us-east"].url + "/health")
    assert resp.status_code == 200
    assert resp.text.startswith('{"timestamp":"')
    assert (
        '"status":"healthy","region":"us-east","checks":{"d1":"ok","kv":"ok","services":"ok"}}'
        in resp.text
    )


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
