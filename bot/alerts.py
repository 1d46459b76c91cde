"""Alerts: the outbox sent to the channel in order, within Slack's limits and the readers' patience.

One message per incident, kept current with updates (coalesced: many pending updates, one call);
each event a reply in its thread. Pool Down inhibits Pool Degraded for the same pool; silenced
regions get no replies except recoveries, but the message is posted and kept current whatever is
silenced, and each silence and its end are announced in the channel (outbox rows without an
incident); at most one reply per pool per ``flap_window`` (what
waits is sent together after it), except what cannot wait: critical events and recoveries, which
take along what waited before them, so that a thread always reads in the order things happened.
A new incident's message goes before anything owed to older ones. The sender runs as soon as the
watch commits what it owes (``wake``), and sweeps every second for what waits on a window; it
paces only what Slack limits (api.slack.com/docs/rate-limits: chat.postMessage about one a second
per channel with short bursts, chat.update in Tier 3, 50+ a minute), and slack_sdk's retry handler
honours ``Retry-After`` on a 429. A post is marked sent in its own transaction right after Slack
answers, so a crash repeats at most one message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics, silences
from bot.db.models import Incident, OutboxPost, Page, Silence, TimelineEvent
from bot.fleet import Fleet
from bot.incidents import figures
from bot.monitor import EventKind, MonitorState, PoolState
from bot.pacing import Bucket
from bot.ports import Notifier
from bot.reads import EntryView, IncidentView
from bot.sender_loop import SenderLoop

log = logging.getLogger(__name__)
ALWAYS_POSTED = {EventKind.RECOVERED.value, EventKind.TRAFFIC_RESTORED.value, "Closed", "Note"}
# Replies that never wait for a pool's flap window: what is critical, and what says it is over.
URGENT = {
    EventKind.POOL_DOWN.value, EventKind.RTO_EXCEEDED.value, EventKind.NO_HEALTHY_POOL.value,
    EventKind.RECOVERED.value, EventKind.TRAFFIC_RESTORED.value, "Closed",
}  # fmt: skip
POST_SPACING = 1.0  # chat.postMessage: about one a second per channel...
POST_BURST = 3  # ...with short bursts (Slack gives no figure: a cautious one)
UPDATE_SPACING = 60 / 50  # chat.update, Tier 3: 50+ a minute per workspace
UPDATE_BURST = 5
SWEEP = 1.0  # seconds between two looks for what waits on a window, when nothing wakes it
SILENCE_KINDS = {"silence", "unsilence", "expiry"}  # a silence's news, posted in the channel


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
    muted = await active_silences(session, now)
    # The page line tells what became of the first trigger, not merely that one was written.
    first_trigger = await session.scalar(
        select(Page.result)
        .where(Page.incident_id == incident.id, Page.action == "trigger")
        .order_by(Page.id)
        .limit(1)
    )
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
        silenced=sorted(muted),
        silenced_until={r: s.until for r, s in muted.items()},
        paged=incident.page_key is not None,
        page_result=first_trigger,
        acknowledged_at=incident.acknowledged_at,
        acknowledged_by=incident.acknowledged_by,
        acknowledged_via=incident.acknowledged_via,
    )


FAILING = {EventKind.POOL_DOWN.value, EventKind.POOL_DEGRADED.value}


def flapping(entries: Sequence[EntryView], region: str | None, since: datetime) -> bool:
    """A pool that failed again after recovering, within the window: it is flapping, and then
    even its critical replies and recoveries wait for the window (one reply per pool per window,
    as DESIGN asks of a flapping gateway). Its first failure and recovery are not held."""
    recovered = False
    for e in entries:
        if e.region != region or e.at < since:
            continue
        if e.kind == EventKind.RECOVERED.value:
            recovered = True
        elif e.kind in FAILING and recovered:
            return True
    return False


class Alerts(SenderLoop):
    """The sender: flush whenever woken, and every SWEEP for what waits on a window."""

    name = "alert sender"
    log = log

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: Notifier,
        fleet: Fleet,
        monitor_state: Callable[[], MonitorState | None],
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__()
        self.sessions = sessions
        self.notifier = notifier
        self.fleet = fleet
        self.monitor_state = monitor_state
        self.clock = clock
        self._posts: dict[str, Bucket] = {}  # by channel
        self._updates = Bucket(UPDATE_SPACING, UPDATE_BURST)

    def sweep(self) -> float:
        return SWEEP  # read at each pass: a test may change it

    async def _space(self, channel: str, kind: str = "post") -> None:
        metrics.ALERTS_POSTED.labels(kind).inc()
        if kind == "update":
            wait = self._updates.take()
        else:
            bucket = self._posts.setdefault(channel, Bucket(POST_SPACING, POST_BURST))
            bucket.every = POST_SPACING  # read at each call: a test may set it to 0
            wait = bucket.take()
        if wait > 0:
            await asyncio.sleep(wait)

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
            owed = [i for i in dict.fromkeys(p.incident_id for p in pending) if i is not None]
            unposted = set(
                await session.scalars(
                    select(Incident.id).where(Incident.id.in_(owed), Incident.message_ts.is_(None))
                )
            )
        calls = 0
        # A new incident's message before anything owed to the ones already in the channel.
        order = sorted(
            dict.fromkeys(p.incident_id for p in pending), key=lambda i: i not in unposted
        )
        for incident_id in order:
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

    async def _flush_silences(self, rows: list[OutboxPost]) -> int:
        """Announce silences beginning and ending, in order, each marked once Slack answers."""
        calls = 0
        for row in rows:
            found = None
            if row.silence_id is not None and row.kind in SILENCE_KINDS:
                async with self.sessions() as session:
                    found = await session.get(Silence, row.silence_id)
            if found is None:
                await self._mark([row.id], "no such silence")  # nothing a reader could use
                continue
            await self._space(row.channel)
            ts = await self.notifier.post_silence(
                row.channel, silences.notice(found, row.kind, self.clock())
            )
            calls += 1
            await self._mark([row.id], ts)
        return calls

    async def _flush_incident(self, incident_id: int | None, rows: list[OutboxPost]) -> int:
        if incident_id is None:
            return await self._flush_silences(rows)  # no incident: a silence's news
        now = self.clock()
        async with self.sessions() as session:
            incident = await session.get(Incident, incident_id)
            if incident is None:
                await self._mark([r.id for r in rows], "no incident")
                return 0
            view = await incident_view(session, incident, self.fleet, self.monitor_state(), now)
            events = {e.id: e for e in view.entries}
            last_reply = await self._last_replies(session, incident.id)
        calls = 0
        ts = incident.message_ts
        if ts is None:
            # Posted whatever is silenced: a silence mutes its region's replies, never the
            # incident (the message says which regions are silenced).
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
            held = (
                region is not None and not closing and now - last_reply.get(region, never) < window
            )
            if held and not flapping(view.entries, region, now - window):
                # What is critical or says it is over goes now, with what waited before it (a
                # thread reads in the order things happened); what came after waits.
                kinds = [events[r.event_id or -1].kind for r in group]
                last = max((i for i, k in enumerate(kinds) if k in URGENT), default=-1)
                group = group[: last + 1]
            elif held:
                group = []
            if not group:
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
            await self._space(incident.channel, "update")
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
