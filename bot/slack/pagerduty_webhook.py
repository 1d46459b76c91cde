"""``POST /pagerduty/webhooks``: PagerDuty's V3 webhook, signature verified, telling the bot when
an incident it paged is acknowledged in PagerDuty.

The issue asks for "the v2 webhook, signature verified": PagerDuty signs only its V3 webhooks (V2
extensions are past their end of support), so this is the V3 subscription. Each delivery carries
``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>``, one per signing secret during a
rotation, comma-separated; one match is enough, compared in constant time ("Verifying
Signatures", https://github.com/PagerDuty/developer-docs/blob/main/docs/webhooks/04-Signatures.md).
The payload is one ``event`` with ``event_type``, ``agent`` (who did it, ``summary`` their name)
and ``data``, an incident whose ``incident_key`` is the dedup_key of the Events API alert that
opened it (https://developer.pagerduty.com/docs/webhooks-overview, "Webhook Payload"). PagerDuty
drops a delivery answered with a 4xx other than 429, without retrying, and retries 5xx
(https://github.com/PagerDuty/developer-docs/blob/main/docs/webhooks/02-Behavior.md): a bad
signature is answered 401 and nothing is recorded; a database failure 503, so it comes again.
The body is read within ``body_timeout`` (408) and up to 64 KiB (413), as Cloudflare's receiver.
incident.acknowledged records the acknowledgement (202 "already ..." when it is acknowledged or
closed already); incident.resolved goes on the timeline and stops further triggers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import database_error
from bot.incidents import Incidents, incident_by_page_key
from bot.slack.bodies import BodyRefused, read_body

log = logging.getLogger(__name__)
PATH = "/pagerduty/webhooks"
HEADER = "X-PagerDuty-Signature"


def signed(secret: str, body: bytes, header: str | None) -> bool:
    """True when one of the header's ``v1=`` signatures is the body's HMAC with ``secret``."""
    if not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    found = False
    for item in header.split(","):
        version, _, value = item.strip().partition("=")
        # Every candidate compared, so the time taken does not tell which one matched.
        if version == "v1" and hmac.compare_digest(value.strip().lower().encode(), expected):
            found = True
    return found


def _reply(status: int, **fields: object) -> web.Response:
    return web.json_response(fields, status=status)


def pagerduty_webhook(
    secret: str | None,
    sessions: async_sessionmaker[AsyncSession],
    incidents: Incidents,
    clock: Callable[[], datetime],
    body_timeout: float = 10.0,
) -> Handler:
    async def receive(request: web.Request) -> web.Response:
        if not secret:  # no subscription configured: as if the route were not there
            return _reply(404, error="PAGERDUTY_WEBHOOK_SECRET is not set")
        try:
            body = await read_body(request, body_timeout)
        except BodyRefused as refused:
            log.warning("refused POST %s from %s: %s", PATH, request.remote, refused.reason)
            return _reply(refused.status, error=refused.reason)
        if not signed(secret, body, request.headers.get(HEADER)):
            log.warning("refused POST %s from %s: no or wrong %s", PATH, request.remote, HEADER)
            return _reply(401, error=f"missing or wrong {HEADER}")
        try:
            event = json.loads(body)["event"]
            kind = str(event["event_type"])
            data: dict[str, Any] = event.get("data") or {}
            key = data.get("incident_key")
            agent = (event.get("agent") or {}).get("summary") or "someone in PagerDuty"
        except (ValueError, KeyError, TypeError, AttributeError):
            return _reply(400, error="not a PagerDuty V3 webhook payload")
        if kind not in ("incident.acknowledged", "incident.resolved") or not isinstance(key, str):
            return _reply(202, result=f"{kind}: nothing to do")
        try:
            async with sessions.begin() as session:
                incident = await incident_by_page_key(session, key)
                if incident is None:
                    return _reply(202, result="not an incident this bot paged")
                number = incident.id
                if kind == "incident.resolved" and incident.closed_at is not None:
                    return _reply(202, result=f"incident {number} is already closed")
                if kind == "incident.resolved":
                    await incidents.resolved_in_pagerduty(session, incident, str(agent), clock())
                    log.info("incident %s resolved in PagerDuty by %s", number, agent)
                    return _reply(202, result=f"incident {number} resolved in PagerDuty noted")
                entry = await incidents.acknowledge(
                    session, incident, str(agent), "pagerduty", clock()
                )
                closed = incident.closed_at is not None and incident.acknowledged_at is None
        except Exception as exc:
            if (reason := database_error(exc)) is None:
                raise
            log.error("could not record PagerDuty's acknowledgement: %s", reason)
            return _reply(503, error="the database is unavailable; PagerDuty retries")
        if entry is None and closed:
            return _reply(202, result=f"incident {number} is already closed")
        if entry is None:
            return _reply(202, result=f"incident {number} was acknowledged already")
        log.info("incident %s acknowledged in PagerDuty by %s", number, agent)
        return _reply(202, result=f"incident {number} acknowledged")

    return receive
