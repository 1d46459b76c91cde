"""The stand-in's Notifications: destinations, policies, and health alerts dispatched to webhooks.

Answers are parsed with the official SDK's models generated from Cloudflare's OpenAPI description
(cloudflare/types/alerting): a field the description does not have, or one of the wrong type, fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import cloudflare
import httpx
import pytest
from aiohttp import web
from cloudflare.types.alerting import Policy, PolicyDeleteResponse
from cloudflare.types.alerting.destinations import WebhookDeleteResponse, Webhooks
from pydantic import BaseModel

from bot.sandbox.servers import LocalServer
from bot.sandbox.world import Sandbox

SECRET = "s3cret-for-the-test"


class Receiver:
    """A webhook endpoint that records what it gets and answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.got: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.server = LocalServer(app)

    async def _hook(self, request: web.Request) -> web.Response:
        self.got.append((time.time(), dict(request.headers), await request.json()))
        return web.Response(status=self.status)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def alerts(self) -> list[dict[str, Any]]:
        return [body for _, _, body in self.got if "alert_type" in body]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.server.start()
    yield r
    await r.server.close()


M = TypeVar("M", bound=BaseModel)


def strict(model: type[M], data: Any) -> M:
    """Parse ``data`` with an SDK model and refuse fields the API description does not name."""
    parsed = model.model_validate(data)
    assert not parsed.model_extra, f"fields outside Cloudflare's description: {parsed.model_extra}"
    return parsed


def api(world: Sandbox) -> tuple[httpx.AsyncClient, str]:
    cf = world.cloudflare
    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {cf.token}"}, timeout=10)
    return client, f"{cf.base_url}/accounts/{cf.account_id}/alerting/v3"


async def until(predicate: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_destination_lifecycle_with_the_test_message(
    world: Sandbox, receiver: Receiver
) -> None:
    http, base = api(world)
    async with http:
        made = await http.post(
            f"{base}/destinations/webhooks",
            json={"name": "bot", "url": receiver.url, "secret": SECRET},
        )
        assert made.status_code == 200, made.text
        webhook_id = made.json()["result"]["id"]
        # Cloudflare's "Save and Test": the documented test text, with the secret.
        ((_, headers, body),) = receiver.got
        assert body["text"].startswith("Hello World! This is a test message")
        assert headers["cf-webhook-auth"] == SECRET
        listed = (await http.get(f"{base}/destinations/webhooks")).json()
        assert listed["success"] is True
        (one,) = listed["result"]
        hook = strict(Webhooks, one)
        assert (hook.id, hook.name, hook.url, hook.type) == (
            webhook_id,
            "bot",
            receiver.url,
            "generic",
        )
        assert "secret" not in json.dumps(listed)  # never answered back
        changed = await http.put(
            f"{base}/destinations/webhooks/{webhook_id}",
            json={"name": "bot renamed", "url": receiver.url},
        )
        assert changed.status_code == 200
        assert receiver.got[-1][1]["cf-webhook-auth"] == SECRET  # the secret kept
        got = (await http.get(f"{base}/destinations/webhooks/{webhook_id}")).json()["result"]
        assert strict(Webhooks, got).name == "bot renamed"
        gone = await http.delete(f"{base}/destinations/webhooks/{webhook_id}")
        strict(WebhookDeleteResponse, gone.json())
        missing = await http.get(f"{base}/destinations/webhooks/{webhook_id}")
        assert missing.status_code == 404 and missing.json()["success"] is False


async def test_a_destination_that_fails_its_test_is_refused(
    world: Sandbox, receiver: Receiver
) -> None:
    http, base = api(world)
    receiver.status = 401
    async with http:
        refused = await http.post(
            f"{base}/destinations/webhooks", json={"name": "bot", "url": receiver.url}
        )
        assert refused.status_code == 400
        assert "answered HTTP 401" in refused.json()["errors"][0]["message"]
        nobody = await http.post(
            f"{base}/destinations/webhooks", json={"name": "x", "url": "http://127.0.0.1:9/hook"}
        )
        assert nobody.status_code == 400
        assert (await http.get(f"{base}/destinations/webhooks")).json()["result"] == []


async def test_policies_validate_and_answer_as_described(
    world: Sandbox, receiver: Receiver
) -> None:
    http, base = api(world)
    async with http:
        hook = (
            await http.post(
                f"{base}/destinations/webhooks", json={"name": "b", "url": receiver.url}
            )
        ).json()["result"]["id"]
        bad = await http.post(
            f"{base}/policies",
            json={
                "name": "p",
                "alert_type": "load_balancing_health_alert",
                "enabled": True,
                "mechanisms": {"webhooks": [{"id": "nope"}]},
            },
        )
        assert bad.status_code == 400 and "does not exist" in bad.text
        body = {
            "name": "p",
            "alert_type": "load_balancing_health_alert",
            "enabled": True,
            "mechanisms": {"webhooks": [{"id": hook}]},
            "filters": {"pool_id": ["a"], "new_health": ["Unhealthy"], "event_source": ["pool"]},
        }
        made = await http.post(f"{base}/policies", json=body)
        policy_id = made.json()["result"]["id"]
        await http.put(f"{base}/policies/{policy_id}", json={"enabled": False})
        got = strict(Policy, (await http.get(f"{base}/policies/{policy_id}")).json()["result"])
        assert got.enabled is False and got.alert_type == "load_balancing_health_alert"
        assert got.filters is not None and got.filters.pool_id == ["a"]
        assert got.mechanisms is not None and got.mechanisms.webhooks is not None
        for item in (await http.get(f"{base}/policies")).json()["result"]:
            strict(Policy, item)
        strict(PolicyDeleteResponse, (await http.delete(f"{base}/policies/{policy_id}")).json())


async def test_the_sdk_reads_and_writes_the_stand_in(world: Sandbox, receiver: Receiver) -> None:
    cf = world.cloudflare
    client = cloudflare.AsyncCloudflare(api_token=cf.token, base_url=cf.base_url)
    try:
        hooks = client.alerting.destinations.webhooks
        made = await hooks.create(account_id=cf.account_id, name="n", url=receiver.url, secret="x")
        assert made is not None and made.id
        page = await hooks.list(account_id=cf.account_id)
        assert [h.url for h in page.result] == [receiver.url]
        await client.alerting.policies.create(
            account_id=cf.account_id,
            name="p",
            alert_type="load_balancing_health_alert",
            enabled=True,
            mechanisms={"webhooks": [{"id": made.id}]},
        )
        policies = await client.alerting.policies.list(account_id=cf.account_id)
        assert [p.name for p in policies.result] == ["p"]
    finally:
        await client.close()


async def _subscribe(world: Sandbox, receiver: Receiver, filters: dict[str, list[str]]) -> str:
    http, base = api(world)
    async with http:
        hook = (
            await http.post(
                f"{base}/destinations/webhooks",
                json={"name": "b", "url": receiver.url, "secret": SECRET},
            )
        ).json()["result"]["id"]
        made = await http.post(
            f"{base}/policies",
            json={
                "name": "failover pools",
                "alert_type": "load_balancing_health_alert",
                "enabled": True,
                "mechanisms": {"webhooks": [{"id": hook}]},
                "filters": filters,
            },
        )
        return str(made.json()["result"]["id"])


def _pool_id(world: Sandbox, name: str) -> str:
    return next(p for p, v in world.cloudflare.pools.items() if v["name"] == name)


async def test_a_pool_going_down_is_dispatched_with_the_secret(
    world: Sandbox, receiver: Receiver
) -> None:
    eu = _pool_id(world, world.base.regions["eu-west"].pool)
    policy = await _subscribe(world, receiver, {"pool_id": [eu]})
    await world.gateways["eu-west"].set_mode("down")
    await until(lambda: any(a["data"]["event_source"] == "pool" for a in receiver.alerts()))
    pool_alert = next(a for a in receiver.alerts() if a["data"]["event_source"] == "pool")
    origin_alert = next(a for a in receiver.alerts() if a["data"]["event_source"] == "origin")
    assert all(h["cf-webhook-auth"] == SECRET for _, h, _ in receiver.got)
    assert pool_alert["alert_type"] == "load_balancing_health_alert"
    assert pool_alert["policy_id"] == policy and pool_alert["name"] == "failover pools"
    assert pool_alert["account_id"] == world.cloudflare.account_id
    assert pool_alert["alert_event"] == "ALERT_STATE_EVENT_START"
    assert pool_alert["data"]["pool_id"] == eu
    assert pool_alert["data"]["new_health"] == "Unhealthy"
    assert pool_alert["data"]["reason"] == "TCP connection failed"
    assert origin_alert["data"]["origin_name"] == world.base.regions["eu-west"].origins[0].name
    assert abs(pool_alert["ts"] - time.time()) < 10
    # The monitor's change is known to the second: what the benchmark measures from.
    change = next(c for c in world.cloudflare.alerting.changes if c.origin_name is None)
    assert change.pool_id == eu and not change.healthy
    await world.gateways["eu-west"].set_mode("healthy")
    await until(lambda: any(a["data"]["new_health"] == "Healthy" for a in receiver.alerts()))
    back = [a for a in receiver.alerts() if a["data"]["event_source"] == "pool"]
    assert [a["alert_event"] for a in back] == ["ALERT_STATE_EVENT_START", "ALERT_STATE_EVENT_END"]
    assert back[0]["alert_correlation_id"] == back[1]["alert_correlation_id"]


async def test_filters_are_honoured(world: Sandbox, receiver: Receiver) -> None:
    us = _pool_id(world, world.base.regions["us-east"].pool)
    await _subscribe(
        world, receiver, {"pool_id": [us], "new_health": ["unhealthy"], "event_source": ["pool"]}
    )
    await world.gateways["eu-west"].set_mode("down")  # another pool: not sent
    await until(lambda: any(not c.healthy for c in world.cloudflare.alerting.changes))
    await world.gateways["us-east"].set_mode("down")
    await until(lambda: bool(receiver.alerts()))
    await world.gateways["us-east"].set_mode("healthy")
    await until(
        lambda: any(c.healthy and c.pool_id == us for c in world.cloudflare.alerting.changes)
    )
    await asyncio.sleep(0.5)
    sent = [
        (a["data"]["pool_id"], a["data"]["event_source"], a["data"]["new_health"])
        for a in receiver.alerts()
    ]
    assert sent == [(us, "pool", "Unhealthy")]


async def test_a_failing_receiver_is_retried_and_never_blocks_the_monitor(
    world: Sandbox, receiver: Receiver
) -> None:
    world.cloudflare.alerting.backoff = (0.1, 0.1)
    await _subscribe(world, receiver, {"event_source": ["pool"]})
    receiver.status = 503
    await world.gateways["apac-sg"].set_mode("down")
    await until(lambda: len(receiver.alerts()) == 3)
    tries = [d for d in world.cloudflare.alerting.deliveries if d.payload.get("alert_type")]
    assert [d.attempt for d in tries] == [1, 2, 3] and not any(d.ok for d in tries)
    assert (
        world.cloudflare.pool_health(_pool_id(world, world.base.regions["apac-sg"].pool)) is False
    )
