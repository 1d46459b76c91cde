"""Alerts: the outbox sent to the channel in order, within Slack's limits and the readers' patience.

One message per incident, kept current with updates (coalesced: many pending updates, one call);
each event a reply in its thread. Pool Down inhibits Pool Degraded for the same pool; silenced
regions get no replies except recoveries; at most one reply per pool per ``flap_window`` (what
waits is sent together after it); about one post a second per channel. A post is marked sent in
its own transaction right after Slack answers, so a crash repeats at most one message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics, silences
from bot.db.models import Incident, OutboxPost, Silence, TimelineEvent
from bot.fleet import Fleet
from bot.incidents import figures
from bot.monitor import EventKind, MonitorState, PoolState
from bot.ports import Notifier
from bot.reads import EntryView, IncidentView

log = logging.getLogger(__name__)
ALWAYS_POSTED = {EventKind.RECOVERED.value, EventKind.TRAFFIC_RESTORED.value, "Closed", "Note"}
POST_SPACING = 1.0  # seconds between posts to one channel


def entry_view(e: TimelineEvent) -> EntryView:
    return EntryView(e.id, e.at, e.kind, e.region, e.severity, e.text, e.source, e.author)


async def active_silences(session: AsyncSession, now: datetime) -> dict[str, Silence]:
    return {s.region: s for s in await silences.active(session, now)}


async def incident_view(
    session: AsyncSession,
    incident: Incident,
    fleet: Fleet,
    monitor: MonitorState | None,
    now: datetime,
) -> IncidentView:
    entries = await session.scalars(
        select(TimelineEvent)
        .where(TimelineEvent.incident_id == incident.id)
        .order_by(TimelineEvent.at, TimelineEvent.id)
    )
    states: dict[str, PoolState] = {}
    if monitor is not None:
        states = {
            r: (PoolState.DISABLED if not p.cf_enabled else p.state)
            for r, p in monitor.pools.items()
        }
    return IncidentView(
        id=incident.id,
        title=incident.title,
        severity=incident.severity,
        opened_at=incident.opened_at,
        began_at=incident.began_at,
        closed_at=incident.closed_at,
        regions=list(incident.regions),
        entries=[entry_view(e) for e in entries],
        figures=figures(incident),
        rto_target=fleet.targets.rto,
        rejoin_target=fleet.targets.rejoin,
        now=now,
        states=states,
        failed_over=dict(monitor.failed_over) if monitor else {},
        stranded=dict(monitor.stranded) if monitor else {},
        silenced=sorted((await active_silences(session, now)).keys()),
    )


class Alerts:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        fleet: Fleet,
        monitor_state: Callable[[], MonitorState | None],
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.notifier = notifier
        self.fleet = fleet
        self.monitor_state = monitor_state
        self.clock = clock
        self._last_post: dict[str, float] = {}

    async def _space(self, channel: str, kind: str = "post") -> None:
        metrics.ALERTS_POSTED.labels(kind).inc()
        wait = self._last_post.get(channel, 0.0) + POST_SPACING - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_post[channel] = time.monotonic()

    async def _mark(self, ids: list[int], result: str) -> None:
        async with self.sessions.begin() as session:
            for row in await session.scalars(select(OutboxPost).where(OutboxPost.id.in_(ids))):
                row.sent_at, row.result = self.clock(), result[:64]

    async def flush(self) -> int:
        """Send what is owed; returns how many Slack calls were made."""
        async with self.sessions() as session:
            pending = list(
                await session.scalars(
                    select(OutboxPost).where(OutboxPost.sent_at.is_(None)).order_by(OutboxPost.id)
                )
            )
        calls = 0
        for incident_id in dict.fromkeys(p.incident_id for p in pending):
            rows = [p for p in pending if p.incident_id == incident_id]
            try:
                calls += await self._flush_incident(incident_id, rows)
            except Exception:
                log.exception("could not post incident %s; will retry", incident_id)
                async with self.sessions.begin() as session:
                    for row in await session.scalars(
                        select(OutboxPost).where(OutboxPost.id.in_([r.id for r in rows]))
                    ):
                        row.attempts += 1
        return calls

    async def _flush_incident(self, incident_id: int | None, rows: list[OutboxPost]) -> int:
        now = self.clock()
        async with self.sessions() as session:
            incident = await session.get(Incident, incident_id) if incident_id is not None else None
            if incident is None:
                await self._mark([r.id for r in rows], "no incident")
                return 0
            view = await incident_view(session, incident, self.fleet, self.monitor_state(), now)
            events = {e.id: e for e in view.entries}
            last_reply = await self._last_replies(session, incident.id)
        calls = 0
        ts = incident.message_ts
        if ts is None:
            if all(r in view.silenced for r in view.regions) and incident.closed_at is None:
                return 0  # every region is silenced: say nothing until one is not
            if all(r in view.silenced for r in view.regions):
                await self._mark([r.id for r in rows], "silenced")
                return 0
            await self._space(incident.channel)
            ts = await self.notifier.post_incident(incident.channel, view)
            calls += 1
            async with self.sessions.begin() as session:
                stored = await session.get(Incident, incident.id)
                assert stored is not None
                stored.message_ts = ts
                session.add(self._posted(incident.id, now, "incident message"))
            await self._mark([r.id for r in rows if r.kind == "open"], ts)
        replies = [r for r in rows if r.kind in ("reply", "close")]
        states = view.states
        by_region: dict[str | None, list[OutboxPost]] = {}
        for row in replies:
            entry = events.get(row.event_id or -1)
            if entry is None:
                await self._mark([row.id], "no such event")
                continue
            if entry.kind not in ALWAYS_POSTED and row.region in view.silenced:
                await self._mark([row.id], "silenced")
                continue
            if (
                entry.kind == EventKind.POOL_DEGRADED.value
                and states.get(row.region or "") is PoolState.DOWN
            ):
                await self._mark([row.id], "inhibited by Pool Down")
                continue
            by_region.setdefault(row.region, []).append(row)
        window = timedelta(seconds=self.fleet.watch.flap_window)
        closing = any(r.kind == "close" for r in replies)  # at the end, all that is held goes out
        never = datetime.min.replace(tzinfo=now.tzinfo)
        for region, group in sorted(by_region.items(), key=lambda item: min(r.id for r in item[1])):
            if region is not None and not closing and now - last_reply.get(region, never) < window:
                continue  # one reply per pool per window: what waits goes out together later
            entries = [events[r.event_id] for r in group if r.event_id in events]
            await self._space(incident.channel)
            reply_ts = await self.notifier.post_thread(incident.channel, ts, view, entries)
            calls += 1
            await self._mark([r.id for r in group], reply_ts)
        for row in [r for r in rows if r.kind == "reminder"]:
            await self._space(incident.channel)
            await self.notifier.post_thread(incident.channel, ts, view, [], reminder=True)
            calls += 1
            await self._mark([row.id], "reminder")
        updates = [r for r in rows if r.kind == "update"]
        if updates:
            async with self.sessions() as session:
                fresh = await session.get(Incident, incident.id)
                assert fresh is not None
                view = await incident_view(
                    session, fresh, self.fleet, self.monitor_state(), self.clock()
                )
            await self._space(incident.channel)
            await self.notifier.update_incident(incident.channel, ts, view)
            calls += 1
            await self._mark([r.id for r in updates], "updated")
        return calls

    async def _last_replies(
        self, session: AsyncSession, incident_id: int
    ) -> Mapping[str, datetime]:
        sent = await session.scalars(
            select(OutboxPost).where(
                OutboxPost.incident_id == incident_id,
                OutboxPost.kind == "reply",
                OutboxPost.sent_at.is_not(None),
                OutboxPost.result.not_in(["silenced", "inhibited by Pool Down", "no such event"]),
            )
        )
        last: dict[str, datetime] = {}
        for row in sent:
            if (
                row.region
                and row.sent_at
                and (row.region not in last or row.sent_at > last[row.region])
            ):
                last[row.region] = row.sent_at
        return last

    @staticmethod
    def _posted(incident_id: int, now: datetime, what: str) -> TimelineEvent:
        return TimelineEvent(
            incident_id=incident_id, at=now, kind="AlertPosted", region=None, severity="info",
            text=f"{what} posted in the channel", source="slack",
        )  # fmt: skip
