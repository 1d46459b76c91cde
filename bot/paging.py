"""What pages PagerDuty, and when: the Page rows the watch owes, written in its transaction.

An incident is paged at its first event whose severity pages (PAGERDUTY_SEVERITIES, default
critical: Pool Down, RTO Exceeded, No Healthy Pool) and whose region has a routing key. It gets
one dedup_key, kept in ``Incident.page_key``; every later event of the incident is another
``trigger`` with that key, which PagerDuty appends to the open alert's log; the incident's close
``resolve``s it; an acknowledgement in Slack ``acknowledge``s it. All of an incident's events go
through the routing key of its first page: PagerDuty applies later events to an alert only when
they come through the routing key that opened it
(https://developer.pagerduty.com/docs/send-alert-event, "Alert De-Duplication").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Incident, Page
from bot.errors import ConfigError
from bot.fleet import Fleet
from bot.monitor import Event
from bot.pagerduty import DEDUP_LIMIT, SUMMARY_LIMIT
from bot.settings import Settings, routing_pairs

CLIENT = "failover-bot"  # the Events API's ``client``: shown in PagerDuty as the event's sender
# The incident's severity as PagerDuty's payload.severity (critical, error, warning or info).
PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


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
    ) -> Page:
        assert incident.page_key is not None
        return Page(
            created_at=now,
            incident_id=incident.id,
            action=action,
            severity=PD_SEVERITY.get(incident.severity, "critical"),
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
        """The page ``event`` owes, if any: the first paging event triggers, later ones update."""
        if not self.policy.enabled:
            return None
        host = self.fleet.load_balancer.hostname
        what = f"{event.kind.value} {event.region}: {event.evidence}"
        if incident.page_key is None:
            if event.severity.value not in self.policy.severities:
                return None
            if self.policy.key_for(event.region) is None:
                return None  # only some regions have keys, and not this one
            incident.page_key = dedup_key(host, incident)
            summary = f"[{host}] Incident #{incident.id}: {incident.title} ({what})"
            region: str | None = event.region
        else:
            summary = f"[{host}] Incident #{incident.id} update: {what}"
            region = await self._region(session, incident)
        page = self._page(incident, "trigger", now, summary, region, self._details(incident, event))
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
