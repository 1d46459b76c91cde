"""What pages PagerDuty, and when: the Page rows the watch owes, written in its transaction.

An incident is paged at its first event whose severity pages (PAGERDUTY_SEVERITIES, default
critical: Pool Down, RTO Exceeded, No Healthy Pool) and whose region has a routing key. It gets
one dedup_key, kept in ``Incident.page_key``; every later event of the incident whose severity
pages is another ``trigger`` with that key and the event's own severity, which PagerDuty appends
to the open alert's log; info events (Recovered, TrafficRestored) are not sent: once the alert is
resolved, a trigger with its dedup_key opens a NEW alert
(https://developer.pagerduty.com/docs/events-api-v2-overview, "Alert De-Duplication"), so only the
incident's close speaks of the end, as a ``resolve``. Nothing more is triggered once PagerDuty says
it resolved the incident (the V3 webhook's incident.resolved, a ``RESOLVED_IN_PAGERDUTY`` row), for
an event in a silenced region, or for a pool flapping within its ``flap_window`` (the Slack thread
holds those replies too); an acknowledgement in Slack ``acknowledge``s it. All of an incident's
events go through the routing key of its first page: PagerDuty applies later events to an alert
only when they come through the routing key that opened it
(https://developer.pagerduty.com/docs/send-alert-event, "Alert De-Duplication").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Incident, Page, Silence, TimelineEvent
from bot.errors import ConfigError
from bot.fleet import Fleet
from bot.monitor import Event
from bot.pagerduty import DEDUP_LIMIT, SUMMARY_LIMIT
from bot.settings import Settings, routing_pairs

CLIENT = "failover-bot"  # the Events API's ``client``: shown in PagerDuty as the event's sender
# The incident's severity as PagerDuty's payload.severity (critical, error, warning or info).
PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
# A Page row never sent (written sent): PagerDuty resolved the incident, so no trigger follows.
RESOLVED_IN_PAGERDUTY = "pd-resolved"
FAILING = {"PoolDown", "PoolDegraded"}


@dataclass(frozen=True)
class PagingPolicy:
    """The routing keys and the severities that page; no key at all: nothing pages."""

    default_key: str | None = None
    region_keys: Mapping[str, str] = field(default_factory=dict)
    severities: frozenset[str] = frozenset({"critical"})
    client_url: str | None = None  # the bot's public URL, linked from PagerDuty's alert

    @property
    def enabled(self) -> bool:
        return bool(self.default_key or self.region_keys)

    def key_for(self, region: str | None) -> str | None:
        return self.region_keys.get(region or "") or self.default_key

    def describe(self) -> str:
        """One line for ``check``."""
        if not self.enabled:
            return (
                "PagerDuty paging is off: set PAGERDUTY_ROUTING_KEY (or PAGERDUTY_ROUTING_KEYS "
                "per region) to page"
            )
        where = []
        if self.region_keys:
            where.append(f"regions {', '.join(sorted(self.region_keys))} on their own keys")
        if self.default_key:
            where.append("every other region on PAGERDUTY_ROUTING_KEY")
        else:
            where.append("other regions not paged")
        return f"PagerDuty: {', '.join(sorted(self.severities))} events page ({'; '.join(where)})"

    @classmethod
    def from_settings(cls, settings: Settings, fleet: Fleet) -> PagingPolicy:
        """A routing key for a region failover.toml does not have is a ConfigError."""
        keys = settings.pagerduty_routing_keys
        pairs = routing_pairs(keys) if keys else {}
        unknown = sorted(set(pairs) - set(fleet.regions))
        if unknown:
            raise ConfigError(
                f"PAGERDUTY_ROUTING_KEYS names {', '.join(unknown)}, not a region of "
                f"failover.toml ({', '.join(fleet.regions)})"
            )
        return cls(
            default_key=settings.pagerduty_routing_key,
            region_keys=pairs,
            severities=frozenset(settings.pagerduty_severities.split(",")),
            client_url=settings.public_url,
        )


def dedup_key(hostname: str, incident: Incident) -> str:
    """One per incident, and never reused by another database's incident of the same number."""
    key = f"{CLIENT}:{hostname}:incident-{incident.id}:{incident.opened_at:%Y%m%dT%H%M%SZ}"
    return key[:DEDUP_LIMIT]


class Paging:
    """Writes the pages an incident owes, in the caller's transaction (the outbox)."""

    def __init__(self, policy: PagingPolicy, fleet: Fleet) -> None:
        self.policy = policy
        self.fleet = fleet

    def _page(
        self,
        incident: Incident,
        action: str,
        now: datetime,
        summary: str,
        region: str | None,
        details: dict[str, Any] | None = None,
        severity: str | None = None,
    ) -> Page:
        assert incident.page_key is not None
        return Page(
            created_at=now,
            incident_id=incident.id,
            action=action,
            severity=PD_SEVERITY.get(severity or incident.severity, "critical"),
            summary=summary[:SUMMARY_LIMIT],
            dedup_key=incident.page_key,
            region=region,
            details=details or {},
            attempts=0,
        )

    async def _region(self, session: AsyncSession, incident: Incident) -> str | None:
        """The region of the incident's first page: its routing key carries all the others."""
        found = await session.scalar(
            select(Page.region).where(Page.incident_id == incident.id).order_by(Page.id).limit(1)
        )
        return found

    async def _silenced(self, session: AsyncSession, region: str, now: datetime) -> bool:
        found = await session.scalar(
            select(Silence.id)
            .where(Silence.region == region, Silence.ended_at.is_(None), Silence.until > now)
            .limit(1)
        )
        return found is not None

    async def _resolved_in_pagerduty(self, session: AsyncSession, incident: Incident) -> bool:
        found = await session.scalar(
            select(Page.id)
            .where(Page.incident_id == incident.id, Page.action == RESOLVED_IN_PAGERDUTY)
            .limit(1)
        )
        return found is not None

    async def _flapping(
        self, session: AsyncSession, incident: Incident, region: str, now: datetime
    ) -> bool:
        """The pool failed again after recovering within its flap window (as bot.alerts holds
        its thread replies): PagerDuty is not told every swing, the open alert stays open."""
        since = now - timedelta(seconds=self.fleet.watch.flap_window)
        kinds = await session.scalars(
            select(TimelineEvent.kind)
            .where(
                TimelineEvent.incident_id == incident.id,
                TimelineEvent.region == region,
                TimelineEvent.at >= since,
            )
            .order_by(TimelineEvent.at, TimelineEvent.id)
        )
        recovered = False
        for kind in kinds:
            if kind == "Recovered":
                recovered = True
            elif kind in FAILING and recovered:
                return True
        return False

    def _details(self, incident: Incident, event: Event) -> dict[str, Any]:
        region = self.fleet.regions.get(event.region)
        custom = {
            "incident": incident.id,
            "event": event.kind.value,
            "region": event.region,
            "evidence": event.evidence,
            "geo regions": " ".join(event.geos),
            "regions touched": " ".join(incident.regions),
            "seen by": event.source,
        }
        return {
            "source": self.fleet.load_balancer.hostname,
            "timestamp": event.at.isoformat(),
            "component": region.pool if region else event.region,
            "group": event.region,
            "class": event.kind.value,
            "custom_details": {k: v for k, v in custom.items() if v not in ("", None)},
        }

    async def on_event(
        self, session: AsyncSession, incident: Incident, event: Event, now: datetime
    ) -> Page | None:
        """The page ``event`` owes, if any: the first paging event triggers, later paging events
        update the alert; events whose severity does not page are never sent."""
        if not self.policy.enabled or event.severity.value not in self.policy.severities:
            return None
        if await self._silenced(session, event.region, now):
            return None  # a silenced region pages nobody (its Slack replies are muted too)
        host = self.fleet.load_balancer.hostname
        what = f"{event.kind.value} {event.region}: {event.evidence}"
        if incident.page_key is None:
            if self.policy.key_for(event.region) is None:
                return None  # only some regions have keys, and not this one
            incident.page_key = dedup_key(host, incident)
            summary = f"[{host}] Incident #{incident.id}: {incident.title} ({what})"
            region: str | None = event.region
        else:
            if await self._resolved_in_pagerduty(session, incident):
                return None  # a trigger now would open a new alert for an incident said over
            if await self._flapping(session, incident, event.region, now):
                return None
            summary = f"[{host}] Incident #{incident.id} update: {what}"
            region = await self._region(session, incident)
        details = self._details(incident, event)
        page = self._page(incident, "trigger", now, summary, region, details, event.severity.value)
        session.add(page)
        return page

    async def on_close(self, session: AsyncSession, incident: Incident, now: datetime) -> None:
        if incident.page_key is None or not self.policy.enabled:
            return
        host = self.fleet.load_balancer.hostname
        summary = f"[{host}] Incident #{incident.id} resolved: {incident.title}"
        session.add(
            self._page(incident, "resolve", now, summary, await self._region(session, incident))
        )

    async def on_resolved_in_pagerduty(
        self, session: AsyncSession, incident: Incident, who: str, now: datetime
    ) -> None:
        """PagerDuty resolved the incident's alert: marked, so no trigger reopens it."""
        if incident.page_key is None:
            return
        page = self._page(
            incident, RESOLVED_IN_PAGERDUTY, now, f"resolved in PagerDuty by {who}", None
        )
        page.sent_at, page.result = now, "resolved in PagerDuty"
        session.add(page)

    async def on_ack(
        self, session: AsyncSession, incident: Incident, who: str, now: datetime
    ) -> None:
        if incident.page_key is None or not self.policy.enabled:
            return
        summary = f"Incident #{incident.id} acknowledged in Slack by {who}"
        session.add(
            self._page(incident, "acknowledge", now, summary, await self._region(session, incident))
        )


def event_body(page: Page, routing_key: str, client_url: str | None) -> dict[str, Any]:
    """The Events API v2 request for ``page`` (https://developer.pagerduty.com/docs/send-alert-event):
    a trigger carries the payload; acknowledge and resolve need only the key and dedup_key."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": page.action,
        "dedup_key": page.dedup_key,
    }
    if page.action != "trigger":
        return body
    details = dict(page.details or {})
    payload: dict[str, Any] = {
        "summary": page.summary[:SUMMARY_LIMIT],
        "source": str(details.get("source") or CLIENT),  # the public hostname
        "severity": page.severity,
    }
    for name in ("timestamp", "component", "group", "class", "custom_details"):
        if details.get(name) is not None:
            payload[name] = details[name]
    body["payload"] = payload
    body["client"] = CLIENT
    if client_url:
        body["client_url"] = client_url
        body["links"] = [{"href": client_url, "text": "failover bot"}]
    return body
