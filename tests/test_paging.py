"""Paging PagerDuty: which events page and when, the page outbox against the PagerDuty stand-in
(in order, backoff on 5xx/429/unreachable, a 400 failed once and never retried, a crash repeating
at most one event), the V3 webhook's signature, and the Acknowledge button's checks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.access import Access
from bot.alerts import incident_view
from bot.db.audit import SqlAuditTrail
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import Incident, OutboxPost, Page, Silence, TimelineEvent
from bot.errors import ConfigError
from bot.fleet import AccessSettings, Fleet
from bot.incidents import Incidents
from bot.invocation import Invocation
from bot.monitor import Event, EventKind
from bot.pagerduty import EventsApi
from bot.pages import PageSender
from bot.paging import Paging, PagingPolicy, event_body
from bot.records import IncidentRecords
from bot.sandbox.pagerduty import PagerDutyStandIn
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.settings import Settings
from bot.slack.pagerduty_webhook import pagerduty_webhook, signed
from bot.status import StatusService
from bot.views.alerts import incident_blocks
from commands.base import Services
from commands.router import Router

from .fakes import T0, ListClock

KEY = "0" * 32
EU_KEY = "e" * 32


def ev(kind: EventKind, region: str, t: float = 0) -> Event:
    return Event(kind, T0 + timedelta(seconds=t), region, f"{kind} evidence", T0)


@dataclass
class Rig:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    incidents: Incidents
    clock: ListClock

    async def events(self, *events: Event) -> None:
        async with self.sessions.begin() as session:
            await self.incidents.apply(session, list(events), self.clock())

    async def close(self, healthy_for: float = 3600) -> None:
        since = {r: self.clock() - timedelta(seconds=healthy_for) for r in self.fleet.regions}
        async with self.sessions.begin() as session:
            assert await self.incidents.settle(session, since, self.clock()) is not None

    async def pages(self) -> list[Page]:
        async with self.sessions() as session:
            return list(await session.scalars(sa.select(Page).order_by(Page.id)))

    async def incident(self, number: int = 1) -> Incident:
        async with self.sessions() as session:
            found = await session.get(Incident, number)
            assert found is not None
            return found


def policy(**kw: object) -> PagingPolicy:
    return PagingPolicy(**({"default_key": KEY} | kw))  # type: ignore[arg-type]


@pytest.fixture
async def engine_sessions(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_url)
    yield sessionmaker(engine)
    await engine.dispose()


def make_rig(
    fleet: Fleet, sessions: async_sessionmaker[AsyncSession], pol: PagingPolicy | None
) -> Rig:
    paging = Paging(pol, fleet) if pol is not None and pol.enabled else None
    return Rig(fleet, sessions, Incidents(fleet, "C1", paging), ListClock(T0))


# ---------------------------------------------------------------------- which events page


async def test_critical_event_triggers_once_later_events_update_close_resolves(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy())
    await rig.events(ev(EventKind.POOL_DEGRADED, "us-east"))
    assert await rig.pages() == []  # a warning opens the incident but pages nobody
    assert (await rig.incident()).page_key is None

    await rig.events(ev(EventKind.POOL_DOWN, "us-east", 5))
    key = (await rig.incident()).page_key
    assert key is not None and "incident-1" in key and len(key) <= 255
    await rig.events(ev(EventKind.FAILOVER_TRIGGERED, "us-east", 8))  # warning: not sent
    await rig.events(ev(EventKind.RTO_EXCEEDED, "us-east", 30))  # critical: appended
    await rig.events(ev(EventKind.RECOVERED, "us-east", 60))  # info: only the close resolves
    await rig.events(ev(EventKind.TRAFFIC_RESTORED, "us-east", 61))
    await rig.close()
    pages = await rig.pages()
    # A trigger after PagerDuty resolved the alert would open a new one: none for the end.
    assert [p.action for p in pages] == ["trigger", "trigger", "resolve"]
    assert {p.dedup_key for p in pages} == {key}  # one alert, appended to
    assert all(p.region == "us-east" for p in pages)  # the first page's routing key for all
    assert "us-east down" in pages[0].summary and "PoolDown us-east" in pages[0].summary
    assert "update: RTOExceeded us-east" in pages[1].summary
    assert "resolved" in pages[2].summary


async def test_follow_up_triggers_carry_the_events_own_severity(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy(severities=frozenset({"critical", "warning"})))
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    await rig.events(ev(EventKind.FAILOVER_TRIGGERED, "us-east", 8))
    await rig.events(ev(EventKind.RECOVERED, "us-east", 60))
    pages = await rig.pages()
    assert [(p.action, p.severity) for p in pages] == [
        ("trigger", "critical"),
        ("trigger", "warning"),  # not the incident's critical
    ]


async def test_no_healthy_pool_and_rto_exceeded_page(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy())
    stranded = Event(
        EventKind.NO_HEALTHY_POOL, T0, "us-east", "fallback unhealthy", T0, geos=("WNAM", "ENAM")
    )
    await rig.events(stranded)
    [page] = await rig.pages()
    body = event_body(page, KEY, None)
    assert body["payload"]["class"] == "NoHealthyPool"
    assert body["payload"]["custom_details"]["geo regions"] == "WNAM ENAM"
    assert body["payload"]["severity"] == "critical"
    assert body["payload"]["source"] == fleet.load_balancer.hostname

    rig2 = make_rig(fleet, engine_sessions, policy())
    await rig2.events(ev(EventKind.RTO_EXCEEDED, "eu-west"))  # joins incident 1
    assert [p.action for p in await rig2.pages()] == ["trigger", "trigger"]


async def test_without_a_key_nothing_pages(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, PagingPolicy())
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    await rig.close()
    assert await rig.pages() == []
    assert (await rig.incident()).page_key is None
    assert "paging is off" in PagingPolicy().describe()


async def test_warning_pages_when_severities_say_so(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy(severities=frozenset({"critical", "warning"})))
    await rig.events(ev(EventKind.POOL_DEGRADED, "eu-west"))
    [page] = await rig.pages()
    assert page.action == "trigger" and page.severity == "warning"


async def test_region_keys_route_by_the_first_paging_event(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    pol = PagingPolicy(region_keys={"eu-west": EU_KEY})
    rig = make_rig(fleet, engine_sessions, pol)
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))  # no key for us-east, none default
    assert await rig.pages() == []
    await rig.events(ev(EventKind.POOL_DOWN, "eu-west", 3))
    await rig.events(ev(EventKind.POOL_DOWN, "apac-sg", 4))
    pages = await rig.pages()
    assert [p.region for p in pages] == ["eu-west", "eu-west"]
    assert event_body(pages[1], pol.key_for(pages[1].region) or "", None)["routing_key"] == EU_KEY


def test_routing_keys_setting_is_checked(fleet: Fleet) -> None:
    good = Settings(pagerduty_routing_keys="eu-west=" + EU_KEY, pagerduty_routing_key=KEY)
    pol = PagingPolicy.from_settings(good, fleet)
    assert pol.key_for("eu-west") == EU_KEY and pol.key_for("us-east") == KEY
    with pytest.raises(ConfigError, match="PAGERDUTY_ROUTING_KEYS names mars"):
        PagingPolicy.from_settings(Settings(pagerduty_routing_keys="mars=" + KEY), fleet)
    with pytest.raises(ValueError, match="not a 32-character Integration Key"):
        Settings(pagerduty_routing_key="R0-short")
    with pytest.raises(ValueError, match="key for eu-west that is not a 32-character"):
        Settings(pagerduty_routing_keys="eu-west=abc")
    with pytest.raises(ValueError, match="not region=key"):
        Settings(pagerduty_routing_keys="eu-west")
    with pytest.raises(ValueError, match="names loud"):
        Settings(pagerduty_severities="critical,loud")


# ---------------------------------------------------------------------- the outbox


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyStandIn]:
    pd = PagerDutyStandIn()
    await pd.start()
    yield pd
    await pd.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sender(
    rig: Rig, pd: PagerDutyStandIn, http: aiohttp.ClientSession, url: str | None = None
) -> PageSender:
    pol = PagingPolicy(default_key=pd.routing_key)
    return PageSender(rig.sessions, EventsApi(url or pd.events_url, http), pol, rig.clock)


async def paged_rig(
    fleet: Fleet, sessions: async_sessionmaker[AsyncSession], key: str, *, close: bool = True
) -> Rig:
    rig = make_rig(fleet, sessions, PagingPolicy(default_key=key))
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    await rig.events(ev(EventKind.RTO_EXCEEDED, "us-east", 5))
    if close:
        await rig.close()
    return rig


async def test_pages_go_out_in_order_and_once(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pages = sender(rig, pagerduty, http)
    assert await pages.flush() == 2
    await rig.close()
    assert await pages.flush() == 1
    assert await pages.flush() == 0  # nothing sent twice
    [alert] = pagerduty.alerts
    assert [e["action"] for e in alert.log] == ["trigger", "trigger", "resolve"]
    assert alert.status == "resolved" and alert.severity == "critical"
    assert all(p.result == "accepted" and p.sent_at for p in await rig.pages())


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_outage_backs_off_then_everything_goes_out_in_order(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
    status: int,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pages = sender(rig, pagerduty, http)
    pagerduty.fail(status, count=2)
    assert await pages.flush() == 0
    first = (await rig.pages())[0]
    assert first.attempts == 1 and first.sent_at is None
    assert first.next_attempt_at == rig.clock() + timedelta(seconds=2)
    assert f"{status}" in (first.result or "")
    assert await pages.flush() == 0  # not due yet: nothing sent, nothing behind it either
    assert len(pagerduty.events) == 1
    rig.clock.now += timedelta(seconds=2)
    assert await pages.flush() == 0  # the second failure doubles the wait
    first = (await rig.pages())[0]
    assert first.attempts == 2 and first.next_attempt_at == rig.clock() + timedelta(seconds=4)
    rig.clock.now += timedelta(seconds=4)
    assert await pages.flush() == 2  # healed: the trigger first, then the rest, in order
    await rig.close()
    assert await pages.flush() == 1
    [alert] = pagerduty.alerts
    assert [e["action"] for e in alert.log] == ["trigger", "trigger", "resolve"]


async def test_retry_after_is_honoured(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pagerduty.fail(429, count=1, retry_after=30)
    assert await sender(rig, pagerduty, http).flush() == 0
    first = (await rig.pages())[0]
    assert first.next_attempt_at == rig.clock() + timedelta(seconds=30)


async def test_unreachable_pagerduty_is_retried(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    await pagerduty.server.stop_listening()
    assert await sender(rig, pagerduty, http).flush() == 0
    first = (await rig.pages())[0]
    assert first.sent_at is None and "unreachable" in (first.result or "")
    await pagerduty.server.start()
    rig.clock.now += timedelta(seconds=2)
    assert await sender(rig, pagerduty, http).flush() == 2


async def test_invalid_event_fails_once_with_the_reason_and_is_not_retried(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    async with rig.sessions.begin() as session:
        first = await session.get(Page, 1)
        assert first is not None
        first.summary = ""  # PagerDuty requires payload.summary
    pages = sender(rig, pagerduty, http)
    assert await pages.flush() == 1  # the rest still goes out behind it
    failed = (await rig.pages())[0]
    assert failed.sent_at is not None and failed.attempts == 1
    assert failed.result is not None and failed.result.startswith("failed: HTTP 400")
    assert "payload.summary" in failed.result
    assert await pages.flush() == 0
    assert sum("refused" in r.getMessage() for r in caplog.records) == 1
    assert len(pagerduty.events) == 2  # never sent again


async def test_a_crash_between_answer_and_mark_repeats_at_most_one(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    crashing = sender(rig, pagerduty, http)
    marked = 0
    finish = crashing._finish

    async def crash_on_second(page_id: int, result: str) -> None:
        nonlocal marked
        marked += 1
        if marked == 2:
            raise RuntimeError("killed before the mark was committed")
        await finish(page_id, result)

    crashing._finish = crash_on_second  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await crashing.flush()
    await rig.close()
    assert await sender(rig, pagerduty, http).flush() == 2  # a new leader carries on
    sent = [json.dumps(e["body"], sort_keys=True) for e in pagerduty.events]
    assert len(sent) == 4 and len(set(sent)) == 3  # exactly one event twice
    assert sent[1] == sent[2]


# ---------------------------------------------------------------------- the V3 webhook


SECRET = "whsec-sandbox"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signature_good_bad_missing_and_several() -> None:
    body = b'{"event":{"event_type":"incident.acknowledged"}}'
    assert signed(SECRET, body, sign(body))
    assert not signed(SECRET, body, sign(body, "another secret"))
    assert not signed(SECRET, body, None) and not signed(SECRET, body, "")
    assert not signed(SECRET, body + b" ", sign(body))  # the raw body, byte for byte
    # During a rotation PagerDuty sends one per secret, comma-separated: one match is enough.
    assert signed(SECRET, body, f"{sign(body, 'old secret')},{sign(body)}")
    assert signed(SECRET, body, f"{sign(body)}, {sign(body, 'new secret')}")
    assert not signed(SECRET, body, sign(body).replace("v1=", "v0="))  # only v1 counts


def webhook(key: str, kind: str = "incident.acknowledged") -> bytes:
    return json.dumps(
        {
            "event": {
                "id": "01",
                "event_type": kind,
                "resource_type": "incident",
                "occurred_at": "2026-01-01T00:00:00Z",
                "agent": {"summary": "Pat Oncall", "type": "user_reference"},
                "data": {"id": "PX", "type": "incident", "incident_key": key},
            }
        }
    ).encode()


@pytest.fixture
async def paged_incident(fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]) -> Rig:
    rig = make_rig(fleet, engine_sessions, policy())
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    return rig


async def post_webhook(
    rig: Rig, secret: str | None, body: bytes, signature: str | None
) -> tuple[int, dict[str, object]]:
    app = web.Application()
    app.router.add_post(
        "/pagerduty/webhooks", pagerduty_webhook(secret, rig.sessions, rig.incidents, rig.clock)
    )
    server = LocalServer(app)
    await server.start()
    try:
        headers = {"X-PagerDuty-Signature": signature} if signature else {}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}/pagerduty/webhooks", data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()
    finally:
        await server.close()


async def timeline(rig: Rig) -> list[str]:
    async with rig.sessions() as session:
        rows = await session.scalars(sa.select(TimelineEvent).order_by(TimelineEvent.id))
        return [f"{e.kind}: {e.text}" for e in rows]


async def test_webhook_acknowledgement_is_recorded_and_shown(paged_incident: Rig) -> None:
    rig = paged_incident
    key = (await rig.incident()).page_key
    assert key is not None
    body = webhook(key)
    status, answer = await post_webhook(rig, SECRET, body, sign(body))
    assert status == 202 and answer["result"] == "incident 1 acknowledged"
    incident = await rig.incident()
    assert incident.acknowledged_via == "pagerduty" and incident.acknowledged_by == "Pat Oncall"
    assert "Acknowledged: acknowledged in PagerDuty by Pat Oncall" in await timeline(rig)
    async with rig.sessions() as session:
        owed = list(await session.scalars(sa.select(OutboxPost.kind).order_by(OutboxPost.id)))
    assert owed[-2:] == ["reply", "update"]  # the thread is told, the message updated
    assert [p.action for p in await rig.pages()] == ["trigger"]  # PagerDuty is not told back
    # Delivered again (PagerDuty delivers at least once): nothing more.
    status, answer = await post_webhook(rig, SECRET, body, sign(body))
    assert status == 202 and "already" in str(answer["result"])


@pytest.mark.parametrize(
    "signature",
    [None, "v1=" + "0" * 64, sign(b"another body"), "garbage"],
    ids=["missing", "zeros", "other-body", "garbage"],
)
async def test_webhook_with_a_bad_signature_records_nothing(
    paged_incident: Rig, signature: str | None
) -> None:
    rig = paged_incident
    key = (await rig.incident()).page_key
    assert key is not None
    before = await timeline(rig)
    status, _ = await post_webhook(rig, SECRET, webhook(key), signature)
    assert status == 401
    assert (await rig.incident()).acknowledged_at is None
    assert await timeline(rig) == before


async def test_webhook_without_a_secret_is_not_there(paged_incident: Rig) -> None:
    body = webhook("whatever")
    status, _ = await post_webhook(paged_incident, None, body, sign(body))
    assert status == 404


async def test_webhook_for_another_incident_or_event_changes_nothing(
    paged_incident: Rig,
) -> None:
    rig = paged_incident
    for body in (webhook("not-ours"), webhook("x", "incident.annotated")):
        status, _ = await post_webhook(rig, SECRET, body, sign(body))
        assert status == 202
    assert (await rig.incident()).acknowledged_at is None
    body = b"not json"
    status, _ = await post_webhook(rig, SECRET, body, sign(body))
    assert status == 400


# ---------------------------------------------------------------------- the Acknowledge button


@dataclass
class Buttons:
    rig: Rig
    router: Router

    async def click(self, value: str, user: str = "U0OPERATOR") -> str:
        invocation = Invocation(
            user_id=user, user_name=user.lower(), team_id="T1", channel_id="C1",
            text=f"[button] acknowledge_page {value}", kind="action",
        )  # fmt: skip
        reply = await self.router.handle_action(invocation, "acknowledge_page", value)
        return render_message({"blocks": reply.block_dicts(), "text": reply.text})


@pytest.fixture
async def buttons(paged_incident: Rig) -> Buttons:
    rig = paged_incident
    fleet = rig.fleet
    access = Access(AccessSettings(operators=["U0OPERATOR"]), None)
    services = Services(
        fleet=fleet,
        status=StatusService(fleet, None, None, None, None),  # type: ignore[arg-type]
        records=IncidentRecords(fleet, rig.sessions, rig.incidents, rig.clock),
        access=access,
        clock=rig.clock,
    )
    return Buttons(rig, Router(services, SqlAuditTrail(rig.sessions)))


async def state(rig: Rig) -> tuple[object, ...]:
    incident = await rig.incident()
    pages = [p.action for p in await rig.pages()]
    return (
        incident.acknowledged_at,
        incident.acknowledged_by,
        tuple(pages),
        len(await timeline(rig)),
    )


async def test_operator_acknowledges_in_slack(buttons: Buttons) -> None:
    said = await buttons.click("1")
    assert "You acknowledged incident #1" in said
    incident = await buttons.rig.incident()
    assert incident.acknowledged_via == "slack" and incident.acknowledged_by == "U0OPERATOR"
    assert [p.action for p in await buttons.rig.pages()] == ["trigger", "acknowledge"]
    assert "Acknowledged: page acknowledged in Slack" in await timeline(buttons.rig)
    again = await buttons.click("1")
    assert "already acknowledged by" in again and "in Slack" in again
    assert [p.action for p in await buttons.rig.pages()] == ["trigger", "acknowledge"]


async def test_non_operator_is_refused_and_nothing_changes(buttons: Buttons) -> None:
    before = await state(buttons.rig)
    said = await buttons.click("1", user="U0STRANGER")
    assert "Only operators may acknowledge pages." in said
    assert await state(buttons.rig) == before


@pytest.mark.parametrize("value", ["", "abc", "1; drop", "0", "-1", "99", "1 2"])
async def test_tampered_values_are_refused_and_nothing_changes(
    buttons: Buttons, value: str
) -> None:
    before = await state(buttons.rig)
    said = await buttons.click(value)
    assert "nothing was acknowledged" in said or "no incident" in said.lower()
    assert await state(buttons.rig) == before


async def test_unpaged_or_closed_incidents_are_refused(buttons: Buttons) -> None:
    await buttons.rig.close()
    before = await state(buttons.rig)
    said = await buttons.click("1")
    assert "is over" in said
    assert await state(buttons.rig) == before


# ---------------------------------------------------------------------- review findings


async def shown(rig: Rig) -> str:
    """The incident message as Slack shows it, from what is in the database now."""
    async with rig.sessions() as session:
        incident = await session.get(Incident, 1)
        assert incident is not None
        view = await incident_view(session, incident, rig.fleet, None, rig.clock())
    return render_message({"blocks": [b.to_dict() for b in incident_blocks(view)], "text": ""})


async def owed_updates(rig: Rig) -> int:
    async with rig.sessions() as session:
        rows = await session.scalars(
            sa.select(OutboxPost).where(OutboxPost.kind == "update", OutboxPost.sent_at.is_(None))
        )
        return len(list(rows))


async def test_message_tells_queued_retrying_accepted_and_refused_pages(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    assert "Paging PagerDuty…" in await shown(rig) and "[Acknowledge]" not in await shown(rig)
    pages = sender(rig, pagerduty, http)
    pagerduty.fail(503, count=1)
    before = await owed_updates(rig)
    await pages.flush()
    text = await shown(rig)
    assert "Paging PagerDuty: retrying, HTTP 503" in text and "Paged PagerDuty" not in text
    assert "[Acknowledge]" not in text
    assert await owed_updates(rig) == before + 1  # the message is updated to say so
    rig.clock.now += timedelta(seconds=2)
    await pages.flush()
    text = await shown(rig)
    assert "Paged PagerDuty · not acknowledged yet" in text and "[Acknowledge]" in text
    assert await owed_updates(rig) == before + 2

    async with rig.sessions.begin() as session:
        first = await session.get(Page, 1)
        assert first is not None
        first.sent_at, first.result = rig.clock(), "failed: HTTP 400: 'payload.summary' missing"
    text = await shown(rig)
    assert "PagerDuty refused the page: HTTP 400" in text and "[Acknowledge]" not in text


async def test_other_4xx_is_retried_and_logged_as_an_error_once(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="bot.pages")
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pages = sender(rig, pagerduty, http)
    pagerduty.fail(403, count=2)  # a proxy refusing, twice
    await pages.flush()
    rig.clock.now += timedelta(seconds=2)
    await pages.flush()
    first = (await rig.pages())[0]
    assert first.sent_at is None and (first.result or "").startswith("retrying: HTTP 403")
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "403" in r.getMessage()]
    assert len(errors) == 1 and "PAGERDUTY_EVENTS_URL" in errors[0].getMessage()
    rig.clock.now += timedelta(seconds=4)
    assert await pages.flush() == 2  # it healed: both go out
    assert any("accepts events again" in r.getMessage() for r in caplog.records)


async def test_retry_after_is_capped_at_the_longest_backoff(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pagerduty.fail(429, count=1, retry_after=86400)
    await sender(rig, pagerduty, http).flush()
    first = (await rig.pages())[0]
    assert first.next_attempt_at == rig.clock() + timedelta(seconds=300)


async def test_a_page_overtaken_by_the_close_is_not_sent(
    fleet: Fleet,
    engine_sessions: async_sessionmaker[AsyncSession],
    pagerduty: PagerDutyStandIn,
    http: aiohttp.ClientSession,
) -> None:
    rig = await paged_rig(fleet, engine_sessions, pagerduty.routing_key, close=False)
    pages = sender(rig, pagerduty, http)
    pagerduty.fail(503, count=1)
    await pages.flush()  # the trigger backs off...
    await rig.close()  # ...and the incident is over before it is due
    rig.clock.now += timedelta(seconds=2)
    assert await pages.flush() == 0
    assert len(pagerduty.events) == 1 and pagerduty.alerts == []  # nobody woken
    assert {p.result for p in await rig.pages()} == {"skipped: resolved before delivery"}
    assert "PagerDuty not paged: the incident was resolved before" in await shown(rig)


async def test_a_silenced_region_pages_nobody(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy())
    async with rig.sessions.begin() as session:
        session.add(
            Silence(region="us-east", until=T0 + timedelta(hours=1), reason="maintenance",
                    created_by="U0OPERATOR", created_at=T0)
        )  # fmt: skip
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    assert await rig.pages() == [] and (await rig.incident()).page_key is None
    await rig.events(ev(EventKind.POOL_DOWN, "eu-west", 5))  # not silenced: pages
    [page] = await rig.pages()
    assert "PoolDown eu-west" in page.summary
    await rig.events(ev(EventKind.RTO_EXCEEDED, "us-east", 9))  # the silenced one: not sent
    assert len(await rig.pages()) == 1


async def test_a_flapping_pool_does_not_update_the_alert_at_every_swing(
    fleet: Fleet, engine_sessions: async_sessionmaker[AsyncSession]
) -> None:
    rig = make_rig(fleet, engine_sessions, policy())
    await rig.events(ev(EventKind.POOL_DOWN, "us-east"))
    await rig.events(ev(EventKind.RECOVERED, "us-east", 10))
    await rig.events(ev(EventKind.POOL_DOWN, "us-east", 20))  # down again within the window
    assert [p.action for p in await rig.pages()] == ["trigger"]
    rig.clock.now += timedelta(seconds=fleet.watch.flap_window + 15)  # the recovery is older
    await rig.events(ev(EventKind.POOL_DOWN, "us-east", fleet.watch.flap_window + 15))
    assert [p.action for p in await rig.pages()] == ["trigger", "trigger"]  # window over


async def test_resolved_in_pagerduty_is_recorded_and_stops_triggers(paged_incident: Rig) -> None:
    rig = paged_incident
    key = (await rig.incident()).page_key
    assert key is not None
    body = webhook(key, "incident.resolved")
    status, answer = await post_webhook(rig, SECRET, body, sign(body))
    assert status == 202 and "resolved in PagerDuty" in str(answer["result"])
    assert "ResolvedInPagerDuty: resolved in PagerDuty by Pat Oncall" in await timeline(rig)
    await rig.events(ev(EventKind.RTO_EXCEEDED, "us-east", 30))  # would open a new alert
    assert [p.action for p in await rig.pages() if p.sent_at is None] == ["trigger"]


async def test_a_stale_read_cannot_record_a_second_acknowledgement(paged_incident: Rig) -> None:
    rig = paged_incident
    async with rig.sessions() as session:
        stale = await session.get(Incident, 1)  # read before anyone acknowledged
    assert stale is not None and stale.acknowledged_at is None
    async with rig.sessions.begin() as session:
        first = await session.get(Incident, 1)
        assert first is not None
        assert await rig.incidents.acknowledge(session, first, "U0A", "slack", rig.clock())
    async with rig.sessions.begin() as session:
        again = await session.merge(stale, load=False)  # the other click, with its stale read
        assert (
            await rig.incidents.acknowledge(session, again, "Pat", "pagerduty", rig.clock()) is None
        )
    acks = [t for t in await timeline(rig) if t.startswith("Acknowledged")]
    assert acks == ["Acknowledged: page acknowledged in Slack"]
    incident = await rig.incident()
    assert incident.acknowledged_by == "U0A" and incident.acknowledged_via == "slack"
    assert [p.action for p in await rig.pages()] == ["trigger", "acknowledge"]


async def test_an_ack_from_pagerduty_on_a_closed_incident_records_nothing(
    paged_incident: Rig,
) -> None:
    rig = paged_incident
    await rig.close()
    key = (await rig.incident()).page_key
    assert key is not None
    before = await timeline(rig)
    for kind in ("incident.acknowledged", "incident.resolved"):
        body = webhook(key, kind)
        status, answer = await post_webhook(rig, SECRET, body, sign(body))
        assert status == 202 and answer["result"] == "incident 1 is already closed"
    assert (await rig.incident()).acknowledged_at is None
    assert await timeline(rig) == before


async def test_webhook_body_too_big_or_too_slow_is_refused(paged_incident: Rig) -> None:
    rig = paged_incident
    app = web.Application()
    handler = pagerduty_webhook(SECRET, rig.sessions, rig.incidents, rig.clock, body_timeout=0.5)
    app.router.add_post("/pagerduty/webhooks", handler)
    server = LocalServer(app)
    await server.start()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"event": '
        await asyncio.sleep(2)
        yield b"{}}"

    try:
        async with aiohttp.ClientSession() as http:
            url = f"{server.url}/pagerduty/webhooks"
            async with http.post(url, data=b"x" * (65 * 1024)) as resp:
                assert resp.status == 413 and "over" in (await resp.json())["error"]
            async with http.post(url, data=trickle()) as resp:
                assert resp.status == 408 and "0.5 s" in (await resp.json())["error"]
    finally:
        await server.close()
    assert (await rig.incident()).acknowledged_at is None
