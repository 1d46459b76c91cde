"""Cloudflare's notifications applied by the lease holder, against the API reads and the health
events: one change seen by several sources is one change, the timeline says who saw it first.

Notifications are stored as the webhook stores them (tests/test_cloudflare_notifications.py covers
the HTTP side); the watch reads the fake load balancer as it reads Cloudflare, on a clock the test
moves, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import sightings
from bot import watch as watch_module
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import CloudflareNotification, Incident, StoredState, TimelineEvent
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.monitor import MonitorState
from bot.watch import Watch, stored_state

from .fakes import T0, FakeLoadBalancer, ListClock
from .reading import incidents

EU = "foundation-eu-west"


@dataclass
class World:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    lb: FakeLoadBalancer
    watch: Watch

    async def read(self, after: float = 0) -> None:
        self.clock.advance(after)
        await self.watch.poll_cloudflare()

    async def notify(
        self,
        healthy: bool | None,
        *,
        at: datetime | None = None,
        after: float = 0,
        pool: str | None = EU,
        origin: str | None = None,
        data: dict[str, object] | None = None,
    ) -> CloudflareNotification:
        """Cloudflare's notification arrives ``after`` s on (generated ``at``, default now) and
        the watch applies it."""
        now = self.clock.advance(after)
        row = CloudflareNotification(
            received_at=now,
            notified_at=at or now.replace(microsecond=0),
            alert_type="load_balancing_health_alert",
            alert_event="ALERT_STATE_EVENT_START",
            pool=pool,
            origin=origin,
            healthy=healthy,
            text="Load Balancing health alert",
            data=data if data is not None else {"reason": "HTTP timeout occurred"},
        )
        async with self.sessions.begin() as session:
            session.add(row)
        await self.watch.apply_notifications()
        async with self.sessions() as session:
            stored = await session.get(CloudflareNotification, row.id)
        assert stored is not None and stored.handled_at is not None
        return stored

    async def entries(self) -> list[TimelineEvent]:
        found = await incidents(self.sessions)
        assert len(found) == 1, f"{len(found)} incidents"
        async with self.sessions() as session:
            rows = await session.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == found[0].id)
                .order_by(TimelineEvent.at, TimelineEvent.id)
            )
            return list(rows)

    async def kinds(self) -> list[str]:
        return [f"{e.kind} {e.region} {e.source}" for e in await self.entries()]


@pytest.fixture
async def world(fleet: Fleet, migrated_url: str) -> AsyncIterator[World]:
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    watch = Watch(fleet, sessions, Incidents(fleet, "C0ALERTS"), lb, clock)
    w = World(fleet, sessions, clock, lb, watch)
    await w.read()  # every geo region served at home
    yield w
    await engine.dispose()


async def test_a_notification_before_the_read_opens_the_incident_and_names_itself(
    world: World,
) -> None:
    world.clock.advance(1)
    world.lb.set_health("eu-west", False)  # Cloudflare's monitor marks it; no read yet
    row = await world.notify(False, after=1.4)
    assert row.result == f"applied: pool {EU} unhealthy"

    [incident] = await incidents(world.sessions)
    entries = await world.entries()
    kinds = [f"{e.kind} {e.source}" for e in entries]
    assert kinds == [
        "CloudflareNotification notification",
        "Detected notification",
        "FailoverTriggered notification",
    ]
    notice, detected, failover = entries
    assert "confirmed by Cloudflare's notification" in detected.text
    assert failover.text.startswith("Cloudflare sends WEU EEU ME NAF SAF to us-east")
    assert notice.text == (
        f"Cloudflare notification: pool {EU} unhealthy at 14:00:02 (HTTP timeout occurred) "
        "(before any API read)"
    )
    # The outage began when Cloudflare says, not when the bot heard of it.
    assert incident.began_at == T0 + timedelta(seconds=2)

    # The next read sees the same: no second event; the entry says by how much the
    # notification was first; the health event of the same change adds no entry.
    await world.read(after=6.2)
    entries = await world.entries()
    assert [f"{e.kind} {e.source}" for e in entries] == kinds
    assert entries[0].text.endswith("(seen 6.2 s before the next API read)")


async def test_a_read_before_the_notification_is_one_change_and_the_timeline_says_so(
    world: World,
) -> None:
    world.watch.events_readable = False  # no health events here: the read, then the notification
    world.lb.set_health("eu-west", False)
    await world.read(after=1)
    row = await world.notify(False, at=T0, after=4.1)
    assert row.result == "duplicate of the API read 4.1 s earlier"
    entries = await world.entries()
    assert [f"{e.kind} {e.source}" for e in entries] == [
        "CloudflareNotification notification",  # at Cloudflare's own time, before the read
        "Detected cloudflare",
        "FailoverTriggered cloudflare",
    ]
    assert entries[0].text == (
        f"Cloudflare notification: pool {EU} unhealthy at 14:00:00 (HTTP timeout occurred) "
        "(the API read saw it 4.1 s earlier)"
    )
    # Delivered again (Cloudflare retries, or a second policy): nothing more.
    again = await world.notify(False, at=T0, after=1)
    assert again.result == "duplicate of the notification 1.0 s earlier"
    assert len(await world.entries()) == 3


async def test_the_health_event_and_the_notification_share_one_entry(world: World) -> None:
    world.clock.advance(1)
    world.lb.set_health("eu-west", False)
    await world.read()  # the read, then Cloudflare's health event of the change
    row = await world.notify(False, at=T0 + timedelta(seconds=1), after=3)
    assert row.result == "duplicate of the API read 3.0 s earlier"
    entries = await world.entries()
    health = [e for e in entries if e.kind.startswith("Cloudflare")]
    assert len(health) == 1, [e.text for e in entries]
    assert health[0].kind == "CloudflareHealth"
    assert health[0].text.endswith(
        "; then Cloudflare's notification (the API read saw it 3.0 s earlier)"
    )


async def test_a_notification_older_than_a_newer_read_does_not_undo_it(world: World) -> None:
    world.lb.set_health("eu-west", False)
    await world.read(after=1)
    world.lb.set_health("eu-west", True)
    await world.read(after=20)  # recovered, read at 14:00:21
    before = await world.kinds()
    late = await world.notify(False, at=T0 + timedelta(seconds=10), after=5)
    assert late.result is not None
    assert late.result.startswith(f"older than what is known: pool {EU} healthy since 14:00:01")
    assert late.result.endswith("API read at 14:00:21")
    assert await world.kinds() == before
    assert world.watch.monitor.state.pools["eu-west"].cf_healthy is True


async def test_a_read_asked_before_the_notification_arrived_does_not_undo_it(
    world: World,
) -> None:
    view = await world.lb.live_view(world.fleet.load_balancer.hostname)  # read, not yet used
    world.lb.set_health("eu-west", False)
    await world.notify(False, after=1)
    # A view read before the notification arrived (shared from the cache) shows it healthy.
    stale = type(view)(view.load_balancer, view.pools, view.monitor, read_at=T0)
    world.clock.advance(1)
    async with world.watch._writing:
        seen, _ = world.watch._sight_read(stale, world.clock())
    assert seen.pool_by_name(EU) is not None
    assert seen.pool_by_name(EU).healthy is False  # type: ignore[union-attr]
    # A read asked after it that still shows it healthy is newer: it is believed.
    world.lb.set_health("eu-west", True)
    await world.read(after=1)
    assert world.watch.monitor.state.pools["eu-west"].cf_healthy is True
    assert "TrafficRestored eu-west cloudflare" in await world.kinds()


async def test_what_is_not_applied_says_why(world: World) -> None:
    unknown = await world.notify(False, pool="someone-elses-pool")
    assert unknown.result == "unknown pool someone-elses-pool"
    unclassified = await world.notify(None)
    assert unclassified.result == "not applied: the health is neither healthy nor unhealthy"
    origin = await world.notify(False, origin="gateway-nowhere")
    assert origin.result == f"unknown origin gateway-nowhere of pool {EU}"
    by_id = await world.notify(False, pool=None, data={"pool_id": "not-a-pool-id"})
    assert by_id.result == "unknown pool not-a-pool-id"
    assert await incidents(world.sessions) == []


async def test_an_origin_notification_is_recorded_without_moving_traffic(world: World) -> None:
    row = await world.notify(False, origin="gateway-eu-west", after=1)
    assert row.result == f"applied: origin gateway-eu-west of pool {EU} unhealthy"
    assert await incidents(world.sessions) == []  # the pool's own health comes on its own
    sighting = world.watch.monitor.state.sightings[f"{EU}/gateway-eu-west"]
    assert (sighting.healthy, sighting.first) == (False, "notification")


async def test_a_new_leader_knows_what_was_already_notified(world: World, fleet: Fleet) -> None:
    world.lb.set_health("eu-west", False)
    await world.notify(False, after=1)
    successor = Watch(fleet, world.sessions, Incidents(fleet, "C0ALERTS"), world.lb, world.clock)
    await successor.load()
    world.watch = successor
    again = await world.notify(False, at=T0 + timedelta(seconds=1), after=2)
    assert again.result == "duplicate of the notification 2.0 s earlier"
    async with world.sessions() as session:
        assert len(list(await session.scalars(select(Incident)))) == 1


async def _stored(world: World, healthy: bool, *, origin: str | None = None) -> int:
    """A notification stored as the webhook stores it, not yet applied."""
    now = world.clock()
    row = CloudflareNotification(
        received_at=now,
        notified_at=now.replace(microsecond=0),
        alert_type="load_balancing_health_alert",
        pool=EU,
        origin=origin,
        healthy=healthy,
        text="Load Balancing health alert",
        data={},
    )
    async with world.sessions.begin() as session:
        session.add(row)
    return row.id


class _FailsOnce:
    """The watch's sessions, whose next transaction fails when it commits (a database blip, or
    the lease handed over), then work again."""

    def __init__(self, real: async_sessionmaker[AsyncSession]) -> None:
        self.real, self.failed = real, False

    def __call__(self) -> AsyncSession:
        return self.real()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        async with self.real() as session:
            yield session
            if not self.failed:
                self.failed = True
                await session.rollback()
                raise ConnectionError("the database went away")
            await session.commit()


async def test_a_batch_whose_commit_fails_is_applied_in_full_the_next_time(
    world: World,
) -> None:
    world.lb.set_health("eu-west", False)
    world.clock.advance(1)
    row_id = await _stored(world, False)
    real = world.watch.sessions
    world.watch.sessions = _FailsOnce(real)  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await world.watch.apply_notifications()
    # Nothing of it stayed with the watch: not known, no traffic moved.
    assert world.watch.monitor.state.sightings[EU].first == "API read"  # the read's, healthy
    assert world.watch.monitor.state.sightings[EU].healthy is True
    assert world.watch.monitor.state.pools["eu-west"].cf_healthy is True
    assert await incidents(real) == []
    world.clock.advance(1)
    assert await world.watch.apply_notifications() == 1
    async with real() as session:
        row = await session.get(CloudflareNotification, row_id)
    assert row is not None and row.result == f"applied: pool {EU} unhealthy"
    assert "FailoverTriggered eu-west notification" in await world.kinds()


async def test_a_batch_writes_the_watch_state_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real_store = watch_module._store

    async def counting(
        session: AsyncSession, name: str, value: dict[str, object], now: datetime
    ) -> None:
        written.append(name)
        await real_store(session, name, value, now)

    monkeypatch.setattr(watch_module, "_store", counting)
    world.lb.set_health("eu-west", False)
    world.clock.advance(1)
    for origin in ("gateway-eu-west", None, "gateway-nowhere"):
        await _stored(world, False, origin=origin)
    assert await world.watch.apply_notifications() == 3
    assert written.count(watch_module.MONITOR_KEY) == 1
    assert "FailoverTriggered eu-west notification" in await world.kinds()


async def test_a_bot_clock_ahead_of_cloudflares_keeps_a_fresh_notification(
    world: World,
) -> None:
    await world.read(after=10)  # healthy, read at 14:00:10 by the bot's clock
    world.lb.set_health("eu-west", False)
    # Cloudflare's clock is 3 s behind the bot's: its ts reads 14:00:07 for a change after the
    # read; the notification arrives at 14:00:11.
    row = await world.notify(False, at=T0 + timedelta(seconds=7), after=1)
    assert row.result == f"applied: pool {EU} unhealthy"
    assert "FailoverTriggered eu-west notification" in await world.kinds()


async def test_healthy_origins_take_no_room_in_the_state(world: World) -> None:
    state = world.watch.monitor.state
    pools = {r.pool for r in world.fleet.regions.values()}
    assert set(state.sightings) <= pools  # read healthy: nothing per origin
    world.lb.set_health("eu-west", False)
    await world.read(after=1)
    assert f"{EU}/gateway-eu-west" in state.sightings  # a change: remembered
    world.lb.set_health("eu-west", True)
    await world.read(after=1)
    assert state.sightings[f"{EU}/gateway-eu-west"].healthy is True
    await world.read(after=sightings.FORGET + 1)  # healthy for an hour: forgotten
    assert set(state.sightings) <= pools


def test_the_same_health_again_minutes_later_is_another_change() -> None:
    state = MonitorState()
    sightings.read(state, EU, False, T0)
    first = sightings.health_event(state, EU, False, T0, T0 + timedelta(seconds=2))
    assert first is not None and sightings.EVENTS in first.seen
    # Healthy and unhealthy again between two reads: the later event is its own change.
    again = T0 + timedelta(minutes=5)
    assert sightings.health_event(state, EU, False, again, again) is None


async def test_a_new_leader_takes_over_the_state_as_it_was_written(world: World) -> None:
    world.lb.set_health("eu-west", False)
    await world.read(after=1)
    await world.notify(False, after=1)
    state = world.watch.monitor.state
    assert state.failed_over and state.sightings  # something beyond the defaults to carry over
    async with world.sessions.begin() as session:
        await world.watch._store_state(session, world.clock())
    assert await stored_state(world.sessions) == state
    async with world.sessions() as session:
        row = await session.get(StoredState, watch_module.MONITOR_KEY)
    assert row is not None
    # Written without its defaults: a track that holds nothing but defaults is an empty object.
    us = row.value["pools"]["us-east"]
    assert "cf_enabled" not in us and "gray_reported" not in us
    # A state written whole, as earlier versions wrote it, loads the same.
    async with world.sessions.begin() as session:
        await watch_module._store(
            session, watch_module.MONITOR_KEY, state.model_dump(mode="json"), world.clock()
        )
    assert await stored_state(world.sessions) == state
