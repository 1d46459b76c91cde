"""Incidents and their timelines: opened, joined and closed by the rules of DESIGN.md.

Any PoolDegraded, PoolDown, FailoverTriggered, NoHealthyPool or GrayFailure opens the single
open incident or joins it; the incident closes once every region it touched has been healthy for
``settle``.
Every change is written with the posts it owes to the channel (the outbox) in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Incident, OutboxPost, TimelineEvent
from bot.fleet import Fleet
from bot.monitor import Event, EventKind, Severity
from bot.paging import Paging
from bot.reads import Figures

RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
# The Detected line names what confirmed the first event (an event's source, else "the <source>").
CONFIRMED_BY = {"notification": "Cloudflare's notification (POST /cloudflare/notifications)"}
TITLES = {
    EventKind.POOL_DEGRADED: "{region} degraded",
    EventKind.POOL_DOWN: "{region} down",
    EventKind.FAILOVER_TRIGGERED: "traffic failed over from {region}",
    EventKind.GRAY_FAILURE: "gray failure on {region}",
}


def title(event: Event) -> str:
    if event.kind is EventKind.NO_HEALTHY_POOL:
        return f"no healthy pool for {' '.join(event.geos) or event.region}"
    return TITLES[event.kind].format(region=event.region)


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


async def open_incident(session: AsyncSession) -> Incident | None:
    found = await session.scalars(
        select(Incident).where(Incident.closed_at.is_(None)).order_by(Incident.id).limit(1)
    )
    return found.first()


def owe(
    session: AsyncSession,
    incident: Incident,
    kind: str,
    now: datetime,
    event: TimelineEvent | None = None,
) -> None:
    session.add(
        OutboxPost(
            created_at=now,
            channel=incident.channel,
            incident_id=incident.id,
            kind=kind,
            region=event.region if event else None,
            event_id=event.id if event else None,
            attempts=0,
        )
    )


async def told(
    session: AsyncSession,
    incident: Incident,
    now: datetime,
    kind: str,
    text: str,
    source: str,
    *,
    author: str | None = None,
    post: str = "reply",
    update_message: bool = True,
) -> TimelineEvent:
    """An info entry on the incident's timeline, posted (``post``: reply or close) and, where
    it changes what the message shows, the message updated."""
    entry = TimelineEvent(
        incident_id=incident.id,
        at=now,
        kind=kind,
        region=None,
        severity=Severity.INFO.value,
        text=text,
        source=source,
        author=author,
    )
    session.add(entry)
    await session.flush()
    owe(session, incident, post, now, entry)
    if update_message:
        owe(session, incident, "update", now)
    return entry


class Incidents:
    def __init__(self, fleet: Fleet, channel: str, paging: Paging | None = None) -> None:
        self.fleet = fleet
        self.channel = channel
        self.paging = paging  # PagerDuty: the pages owed, in the same transaction as the posts

    async def apply(
        self, session: AsyncSession, events: list[Event], now: datetime
    ) -> Incident | None:
        """Put ``events`` into the open incident (opening one if they call for it)."""
        incident = await open_incident(session)
        for event in events:
            if incident is None:
                if not event.kind.opens_incident:
                    continue
                incident = Incident(
                    opened_at=now,
                    began_at=event.began_at or event.at,
                    severity=event.severity.value,
                    regions=[event.region],
                    title=title(event),
                    channel=self.channel,
                )
                session.add(incident)
                await session.flush()
                detected = TimelineEvent(
                    incident_id=incident.id,
                    at=event.at,
                    kind="Detected",
                    region=event.region,
                    severity=event.severity.value,
                    text=(
                        f"first sign at {(event.began_at or event.at):%H:%M:%S} UTC, "
                        f"confirmed by {CONFIRMED_BY.get(event.source, f'the {event.source}')}"
                    ),
                    source=event.source,
                )
                session.add(detected)
                incident.time_to_detect = _seconds(event.at, incident.began_at)
                owe(session, incident, "open", now)
            elif (
                RANK[event.severity] > RANK[Severity(incident.severity)]
                and event.kind.opens_incident
            ):
                incident.severity = event.severity.value
                incident.title = title(event)
            if event.region not in incident.regions and event.region in self.fleet.regions:
                incident.regions = [*incident.regions, event.region]
            text = event.evidence
            if event.geos:
                text = f"{text} ({len(event.geos)} geo regions)"
            entry = TimelineEvent(
                incident_id=incident.id,
                at=event.at,
                kind=event.kind.value,
                region=event.region,
                severity=event.severity.value,
                text=text,
                source=event.source,
            )
            session.add(entry)
            await session.flush()
            if event.kind is EventKind.FAILOVER_TRIGGERED and incident.rto is None:
                incident.rto = _seconds(event.at, incident.began_at)
            owe(session, incident, "reply", now, entry)
            owe(session, incident, "update", now)
            if self.paging is not None:
                await self.paging.on_event(session, incident, event, now)
        return incident

    async def settle(
        self, session: AsyncSession, healthy_since: Mapping[str, datetime | None], now: datetime
    ) -> Incident | None:
        """Close the open incident once every region it touched has been healthy ``settle`` s."""
        incident = await open_incident(session)
        if incident is None:
            return None
        settle = timedelta(seconds=self.fleet.watch.settle)
        since = [healthy_since.get(r) for r in incident.regions]
        if any(s is None or now - s < settle for s in since):
            return None
        recovered_at = max(s for s in since if s is not None)
        incident.closed_at = now
        incident.time_to_recover = _seconds(recovered_at, incident.began_at)
        text = f"every region healthy for {self.fleet.watch.settle:g} s"
        await told(session, incident, now, "Closed", text, "bot", post="close")
        if self.paging is not None:
            await self.paging.on_close(session, incident, now)
        return incident

    async def remind(self, session: AsyncSession, now: datetime) -> bool:
        incident = await open_incident(session)
        if incident is None:
            return False
        last = incident.last_reminder_at or incident.opened_at
        if (now - last).total_seconds() < self.fleet.watch.reminder:
            return False
        incident.last_reminder_at = now
        owe(session, incident, "reminder", now)
        return True

    async def note(
        self, session: AsyncSession, incident: Incident, author: str, text: str, now: datetime
    ) -> TimelineEvent:
        return await told(
            session, incident, now, "Note", text, "operator", author=author, update_message=False
        )

    async def acknowledge(
        self, session: AsyncSession, incident: Incident, who: str, via: str, now: datetime
    ) -> TimelineEvent | None:
        """Record who acknowledged the incident's page, from Slack (``who`` a user id: PagerDuty
        is told) or from PagerDuty (``who`` the agent's name: PagerDuty already knows). None when
        it was acknowledged already or is closed: the first acknowledgement stands. One
        conditional UPDATE decides, so a double click, two instances or a click racing the
        webhook record one acknowledgement, whatever they read before."""
        won = await session.execute(
            update(Incident)
            .where(
                Incident.id == incident.id,
                Incident.acknowledged_at.is_(None),
                Incident.closed_at.is_(None),
            )
            .values(acknowledged_at=now, acknowledged_by=who[:128], acknowledged_via=via)
            .execution_options(synchronize_session=False)
        )
        await session.refresh(incident)  # the winner's values, or the other one's
        if cast(CursorResult[Any], won).rowcount != 1:
            return None
        slack = via == "slack"
        entry = await told(
            session,
            incident,
            now,
            "Acknowledged",
            "page acknowledged in Slack" if slack else f"acknowledged in PagerDuty by {who}",
            "operator" if slack else "pagerduty",
            author=who[:64] if slack else None,  # a Slack user id, shown as a mention
        )
        if slack and self.paging is not None:
            await self.paging.on_ack(session, incident, who, now)
        return entry

    async def resolved_in_pagerduty(
        self, session: AsyncSession, incident: Incident, who: str, now: datetime
    ) -> TimelineEvent:
        """PagerDuty says the incident is resolved there: on the timeline, and no more triggers
        (one would open a new alert). The incident itself closes by the bot's own rules."""
        text = f"resolved in PagerDuty by {who}"
        entry = await told(session, incident, now, "ResolvedInPagerDuty", text, "pagerduty")
        if self.paging is not None:
            await self.paging.on_resolved_in_pagerduty(session, incident, who, now)
        return entry


async def incident_by_page_key(session: AsyncSession, key: str) -> Incident | None:
    found = await session.scalars(select(Incident).where(Incident.page_key == key).limit(1))
    return found.first()


async def recent_incidents(session: AsyncSession, limit: int = 10) -> list[Incident]:
    rows = await session.scalars(select(Incident).order_by(Incident.id.desc()).limit(limit))
    return list(rows)


def figures(incident: Incident) -> Figures:
    return Figures(incident.time_to_detect, incident.rto, incident.time_to_recover)
