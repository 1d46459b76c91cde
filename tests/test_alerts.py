"""Alert rules through the outbox with a recording notifier: inhibition, silences, reminders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import alerts, silences
from bot.alerts import Alerts
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.monitor import Event, EventKind, MonitorState, PoolState, PoolTrack
from bot.reads import EntryView, IncidentView, SilenceNotice

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@dataclass
class Recorder:
    posts: list[str] = field(default_factory=list)

    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        self.posts.append(f"open #{incident.id} {incident.title}")
        return "1.0"

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None:
        self.posts.append(f"update #{incident.id}")

    async def post_thread(
        self,
        channel: str,
        thread_ts: str,
        incident: IncidentView,
        entries: Sequence[EntryView],
        *,
        reminder: bool = False,
    ) -> str:
        self.posts.append(
            "reminder" if reminder else " + ".join(f"{e.kind} {e.region}" for e in entries)
        )
        return "1.1"

    async def post_silence(self, channel: str, notice: SilenceNotice) -> str:
        self.posts.append(f"{notice.kind} {notice.region}")
        return "1.2"


@dataclass
class Rig:
    sessions: async_sessionmaker[AsyncSession]
    incidents: Incidents
    alerts: Alerts
    notifier: Recorder
    state: MonitorState
    now: list[datetime]

    async def events(self, *events: Event) -> None:
        async with self.sessions.begin() as session:
            await self.incidents.apply(session, list(events), self.now[0])


@pytest.fixture
async def rig(
    fleet: Fleet, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    monkeypatch.setattr(alerts, "POST_SPACING", 0.0)
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    state = MonitorState(pools={r: PoolTrack(state=PoolState.HEALTHY) for r in fleet.regions})
    now = [T0]
    notifier = Recorder()
    rig = Rig(
        sessions,
        Incidents(fleet, "C1"),
        Alerts(sessions, notifier, fleet, lambda: state, lambda: now[0]),
        notifier,
        state,
        now,
    )
    yield rig
    await engine.dispose()


def event(kind: EventKind, region: str, t: float = 0) -> Event:
    return Event(kind, T0 + timedelta(seconds=t), region, f"{kind} evidence", T0)


async def test_open_reply_update_in_one_flush(rig: Rig) -> None:
    await rig.events(event(EventKind.POOL_DOWN, "us-east"))
    assert await rig.alerts.flush() == 3
    assert rig.notifier.posts == ["open #1 us-east down", "PoolDown us-east", "update #1"]
    assert await rig.alerts.flush() == 0  # nothing owed twice


async def test_pool_down_inhibits_pool_degraded(rig: Rig) -> None:
    rig.state.pools["eu-west"].state = PoolState.DOWN
    await rig.events(
        event(EventKind.POOL_DEGRADED, "eu-west"), event(EventKind.POOL_DOWN, "eu-west", 1)
    )
    await rig.alerts.flush()
    assert "PoolDegraded eu-west" not in " ".join(rig.notifier.posts)
    assert "PoolDown eu-west" in rig.notifier.posts


async def test_silenced_region_gets_no_replies_but_recovery_posts(rig: Rig) -> None:
    await rig.events(event(EventKind.POOL_DOWN, "us-east"))
    await rig.alerts.flush()
    async with rig.sessions.begin() as session:
        await silences.silence(session, "us-east", timedelta(hours=1), "noisy", "U1", rig.now[0])
    rig.now[0] += timedelta(minutes=2)
    await rig.events(event(EventKind.FAILOVER_TRIGGERED, "us-east", 100))
    await rig.alerts.flush()
    assert "FailoverTriggered us-east" not in rig.notifier.posts
    rig.now[0] += timedelta(minutes=2)
    await rig.events(event(EventKind.RECOVERED, "us-east", 200))
    await rig.alerts.flush()
    assert "Recovered us-east" in rig.notifier.posts


async def test_one_reply_per_pool_per_window_then_together(rig: Rig) -> None:
    await rig.events(event(EventKind.POOL_DOWN, "eu-west"))
    await rig.alerts.flush()
    rig.now[0] += timedelta(seconds=5)
    await rig.events(
        event(EventKind.RECOVERED, "eu-west", 5), event(EventKind.POOL_DOWN, "eu-west", 6)
    )
    await rig.alerts.flush()
    assert rig.notifier.posts.count("PoolDown eu-west") == 1  # held: within a minute of the last
    rig.now[0] += timedelta(seconds=60)
    await rig.alerts.flush()
    assert "Recovered eu-west + PoolDown eu-west" in rig.notifier.posts


async def test_reminder_is_broadcast_after_the_interval(rig: Rig, fleet: Fleet) -> None:
    await rig.events(event(EventKind.POOL_DOWN, "us-east"))
    await rig.alerts.flush()
    async with rig.sessions.begin() as session:
        assert not await rig.incidents.remind(session, rig.now[0] + timedelta(minutes=29))
        assert await rig.incidents.remind(
            session, rig.now[0] + timedelta(seconds=fleet.watch.reminder)
        )
    await rig.alerts.flush()
    assert rig.notifier.posts[-1] == "reminder"


async def test_everything_silenced_still_posts_the_incident_message(rig: Rig) -> None:
    async with rig.sessions.begin() as session:
        await silences.silence(
            session, "apac-sg", timedelta(hours=1), "maintenance", "U1", rig.now[0]
        )
    await rig.events(event(EventKind.POOL_DOWN, "apac-sg"))
    await rig.alerts.flush()
    # The message is posted and kept current; only the silenced region's reply is muted.
    assert rig.notifier.posts == ["open #1 apac-sg down", "update #1"]
