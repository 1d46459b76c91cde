"""``POST /cloudflare/notifications`` on the bot's real HTTP app (bot/slack/server.py), served on
127.0.0.1 over a migrated database (SQLite, and PostgreSQL where TEST_DATABASE_URL is set).

What Cloudflare sends (https://developers.cloudflare.com/notifications/reference/webhook-payload-
schema/) is stored once its ``cf-webhook-auth`` secret and account are right; everything else is
refused with a short answer and nothing stored. The lease holder then applies what was stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from slack_bolt.async_app import AsyncApp
from sqlalchemy import select

from bot.db.engine import create_engine, sessionmaker
from bot.db.models import CloudflareNotification
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.sandbox.servers import LocalServer
from bot.settings import Settings
from bot.slack.cloudflare_webhook import NotificationReceiver
from bot.slack.server import build_web_app
from bot.watch import Watch

from .fakes import T0, FakeLoadBalancer, ListClock
from .reading import incidents, timeline

SECRET = "s3cret-for-the-webhook-0123456789abcdef"
ACCOUNT = "0123456789abcdef0123456789abcdef"
PATH = "/cloudflare/notifications"


def alert(**data: Any) -> dict[str, Any]:
    """A Load Balancing health alert as Cloudflare's generic webhook sends it."""
    return {
        "name": "failover-bot pools",
        "text": "Pool foundation-eu-west is now Unhealthy",
        "data": {
            "pool_id": "foundation-eu-west",
            "pool_name": "foundation-eu-west",
            "event_source": "pool",
            "new_health": "Unhealthy",
            "reason": "HTTP timeout occurred",
        }
        | data,
        "ts": int(T0.timestamp()) + 2,
        "account_id": ACCOUNT,
        "policy_id": "749b911ea5d04344a58e45edd099b328",
        "policy_name": "failover-bot pools",
        "alert_type": "load_balancing_health_alert",
        "alert_correlation_id": "000eaa907ed24e78946d3a93adb2ae57",
        "alert_event": "ALERT_STATE_EVENT_START",
    }


@dataclass
class Receiving:
    url: str
    http: httpx.AsyncClient
    database_url: str
    woken: list[int]

    async def post(
        self, body: object, secret: str | None = SECRET, **headers: str
    ) -> httpx.Response:
        sent = {"content-type": "application/json", **headers}
        if secret is not None:
            sent["cf-webhook-auth"] = secret
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.http.post(self.url, content=raw, headers=sent)

    async def stored(self) -> list[CloudflareNotification]:
        engine = create_engine(self.database_url)
        try:
            async with sessionmaker(engine)() as session:
                rows = await session.scalars(
                    select(CloudflareNotification).order_by(CloudflareNotification.id)
                )
                return list(rows)
        finally:
            await engine.dispose()


async def serve(database_url: str, secret: str | None, woken: list[int]) -> tuple[LocalServer, Any]:
    settings = Settings(
        database_url=database_url,
        cloudflare_webhook_secret=secret,
        cloudflare_account_id=ACCOUNT,
        http_body_timeout=1.0,
    )
    engine = create_engine(database_url)
    bolt = AsyncApp(signing_secret="unused", token="xoxb-unused")
    receiver = NotificationReceiver(
        secret,
        ACCOUNT,
        sessionmaker(engine),
        notified=lambda: woken.append(len(woken) + 1),
        body_timeout=settings.http_body_timeout,
    )
    app = build_web_app(bolt, engine, settings=settings, webhooks={PATH: receiver.handle})
    server = LocalServer(app)
    await server.start()
    return server, engine


@pytest.fixture
async def receiving(migrated_url: str) -> AsyncIterator[Receiving]:
    woken: list[int] = []
    server, engine = await serve(migrated_url, SECRET, woken)
    async with httpx.AsyncClient(timeout=5) as http:
        yield Receiving(f"{server.url}{PATH}", http, migrated_url, woken)
    await server.close()
    await engine.dispose()


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (None, "no cf-webhook-auth header"),
        ("not-the-secret-not-the-secret-not-the-s", "wrong cf-webhook-auth"),
        ("short", "wrong cf-webhook-auth"),
        (SECRET + "x", "wrong cf-webhook-auth"),
        ("", "wrong cf-webhook-auth"),
    ],
)
async def test_without_the_secret_401_and_nothing_stored(
    receiving: Receiving, caplog: pytest.LogCaptureFixture, secret: str | None, why: str
) -> None:
    with caplog.at_level(logging.WARNING):
        resp = await receiving.post(alert(), secret=secret)
    assert resp.status_code == 401
    assert why in resp.json()["error"]
    assert await receiving.stored() == []
    assert receiving.woken == []
    refused = [r for r in caplog.records if "refused POST /cloudflare/notifications" in r.message]
    assert len(refused) == 1
    assert SECRET not in caplog.text


async def test_the_secret_sent_twice_is_refused(receiving: Receiving) -> None:
    resp = await receiving.http.post(
        receiving.url,
        content=json.dumps(alert()).encode(),
        headers=[("cf-webhook-auth", SECRET), ("cf-webhook-auth", SECRET)],
    )
    assert resp.status_code == 401
    assert await receiving.stored() == []


async def test_another_account_403(receiving: Receiving) -> None:
    resp = await receiving.post(alert() | {"account_id": "f" * 32})
    assert resp.status_code == 403
    assert "not ours" in resp.json()["error"]
    assert await receiving.stored() == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (json.dumps(alert() | {"ts": "yesterday"}).encode(), "ts"),
        (json.dumps(alert() | {"ts": 99999999999999}).encode(), "ts"),  # past year 9999
        (json.dumps(alert() | {"ts": -1}).encode(), "ts"),
        (json.dumps(alert() | {"data": [1]}).encode(), "data"),
    ],
)
async def test_malformed_400(receiving: Receiving, body: bytes, why: str) -> None:
    resp = await receiving.post(body)
    assert resp.status_code == 400
    assert why in resp.json()["error"]
    assert await receiving.stored() == []


async def test_over_64_kib_413(receiving: Receiving) -> None:
    big = alert(padding="x" * 70_000)
    resp = await receiving.post(big)
    assert resp.status_code == 413
    assert await receiving.stored() == []


async def test_not_configured_404(migrated_url: str) -> None:
    woken: list[int] = []
    server, engine = await serve(migrated_url, None, woken)
    try:
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                f"{server.url}{PATH}", json=alert(), headers={"cf-webhook-auth": "anything"}
            )
        assert resp.status_code == 404
        assert "not configured" in resp.text and "CLOUDFLARE_WEBHOOK_SECRET" in resp.text
    finally:
        await server.close()
        await engine.dispose()


async def test_cloudflares_test_post_200_nothing_stored(
    receiving: Receiving, caplog: pytest.LogCaptureFixture
) -> None:
    # The body Cloudflare sends when the destination is saved (configure-webhooks/).
    text = (
        "Hello World! This is a test message sent from https://cloudflare.com. If you can "
        "see this, your webhook is configured properly."
    )
    with caplog.at_level(logging.INFO):
        resp = await receiving.post({"text": text})
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "test": True}
    assert await receiving.stored() == []
    assert receiving.woken == []
    assert any("test notification" in r.message for r in caplog.records)


async def test_other_alert_types_are_kept_not_applied(receiving: Receiving) -> None:
    other = alert() | {"alert_type": "universal_ssl_event_type", "data": {"zone_name": "x"}}
    resp = await receiving.post(other)
    assert resp.status_code == 200
    [row] = await receiving.stored()
    assert (row.result, row.handled_at is not None) == ("ignored: universal_ssl_event_type", True)
    assert receiving.woken == []


async def test_without_alert_type_but_with_data_it_is_stored_not_taken_for_the_test(
    receiving: Receiving,
) -> None:
    # alert_type "may not be present in all notifications" (webhook-payload-schema/): only an
    # empty one is Cloudflare's test. With a health alert's data it is applied as one.
    health = alert()
    del health["alert_type"]
    resp = await receiving.post(health)
    assert resp.status_code == 200 and "test" not in resp.json(), resp.text
    other = alert() | {"data": {"zone_name": "example.com"}}
    del other["alert_type"]
    assert (await receiving.post(other)).status_code == 200
    first, second = await receiving.stored()
    assert (first.pool, first.healthy, first.handled_at) == ("foundation-eu-west", False, None)
    assert receiving.woken == [1]  # the health alert only
    assert second.handled_at is not None
    assert second.result == "ignored: no alert_type, and its data is no health alert"


async def test_a_health_alert_is_stored_then_applied_by_the_leader(
    receiving: Receiving, fleet: Fleet
) -> None:
    # Cloudflare's words in any case, unknown keys ignored.
    resp = await receiving.post(alert(new_health="UNHEALTHY", something_new={"a": 1}))
    assert resp.status_code == 200, resp.text
    [row] = await receiving.stored()
    assert (row.pool, row.origin, row.healthy, row.handled_at) == (
        "foundation-eu-west",
        None,
        False,
        None,
    )
    assert row.notified_at == T0.replace(second=2)  # Cloudflare's ts, not the arrival
    assert row.correlation_id == "000eaa907ed24e78946d3a93adb2ae57"
    assert receiving.woken == [1]  # this instance's leader is told at once

    # The lease holder (any instance: they share the database) applies it.
    engine = create_engine(receiving.database_url)
    sessions = sessionmaker(engine)
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    watch = Watch(fleet, sessions, Incidents(fleet, "C0ALERTS"), lb, clock)
    await watch.poll_cloudflare()
    lb.set_health("eu-west", False)
    clock.advance(3)
    assert await watch.apply_notifications() == 1
    [handled] = await receiving.stored()
    assert handled.result == "applied: pool foundation-eu-west unhealthy"
    [incident] = await incidents(sessions)
    assert await timeline(sessions, incident.id) == [
        "CloudflareNotification eu-west",
        "Detected eu-west",
        "FailoverTriggered eu-west",
    ]
    assert await watch.apply_notifications() == 0  # applied once
    await engine.dispose()


async def test_an_origin_alert_by_pool_id_and_health_words(receiving: Receiving) -> None:
    body = alert(
        event_source="origin",
        origin_name="gateway-eu-west",
        new_health="Healthy",
        pool_name=None,
        pool_id="17b5962d775c646f3f9725cbc7a53df4",
    )
    assert (await receiving.post(body)).status_code == 200
    [row] = await receiving.stored()
    assert (row.pool, row.origin, row.healthy) == (
        "17b5962d775c646f3f9725cbc7a53df4",
        "gateway-eu-west",
        True,
    )
