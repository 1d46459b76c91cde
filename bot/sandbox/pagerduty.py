"""A PagerDuty stand-in: the Events API v2 endpoint, alerts by dedup_key, signed V3 webhooks.

``POST /v2/enqueue`` answers as PagerDuty documents it
(https://developer.pagerduty.com/docs/events-api-v2-overview, "Response Codes & Retry Logic";
https://developer.pagerduty.com/docs/send-alert-event): 202 with ``{"status": "success",
"message": "Event processed", "dedup_key": ...}``, or 400 ``{"status": "invalid event", ...,
"errors": [...]}`` for an event missing what is required. A trigger opens an alert or is appended
to the open one with its dedup_key; acknowledge and resolve change it, and are dropped when no
alert is open. Faults on demand: the next N events (or all, until healed) answer 429 or a 5xx.
``acknowledge`` plays a responder acknowledging in PagerDuty's app: the alert changes and every
subscription gets a V3 webhook (``incident.acknowledged``), signed ``X-PagerDuty-Signature:
v1=<hex HMAC-SHA256 of the body>`` with its secret. It imports nothing from the bot's logic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.sandbox.servers import LocalServer

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class Alert:
    dedup_key: str
    routing_key: str
    summary: str
    severity: str
    number: int  # the PagerDuty incident's number
    status: str = "triggered"  # acknowledged, resolved
    log: list[dict[str, Any]] = field(default_factory=list)  # every event applied, in order
    acknowledged_by: str | None = None

    @property
    def incident_id(self) -> str:
        return f"PSBX{self.number:04d}"


@dataclass
class Subscription:
    url: str
    secret: str
    deliveries: list[int] = field(default_factory=list)  # the HTTP statuses answered


@dataclass
class Fault:
    status: int  # 429, 500, 502, 503 ...
    remaining: int | None  # None: until healed
    retry_after: float | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


EVENTS_API_AGENT = "Events API integration"  # the agent of what an integration did


class PagerDutyStandIn:
    def __init__(self, port: int | None = None) -> None:
        # A 32-character Integration Key, as PagerDuty gives one per Events API v2 integration.
        self.routing_key = secrets.token_hex(16)
        self.alerts: list[Alert] = []  # every alert ever opened, oldest first
        self.events: list[dict[str, Any]] = []  # every request received, answered or not
        self.subscriptions: list[Subscription] = []
        self.fault: Fault | None = None
        self.listeners: list[Callable[[str, Alert], None]] = []  # (what happened, the alert)
        self._numbers = itertools.count(1)
        self._deliveries: set[asyncio.Task[None]] = set()  # webhooks on their way out
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_post("/_sandbox/faults", self._set_fault)
        app.router.add_delete("/_sandbox/faults", self._heal)
        app.router.add_get("/_sandbox/alerts", self._list_alerts)
        app.router.add_post("/_sandbox/alerts/{key}/acknowledge", self._acknowledge)
        self.server = LocalServer(app, port)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/v2/enqueue"

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self.server.close()

    # What a test or the demo does to PagerDuty.

    def fail(
        self, status: int = 503, count: int | None = None, retry_after: float | None = None
    ) -> None:
        """The next ``count`` events (all, while None, until ``heal``) answer ``status``."""
        self.fault = Fault(status, count, retry_after)

    def heal(self) -> None:
        self.fault = None

    def subscribe(self, url: str, secret: str | None = None) -> Subscription:
        """A V3 webhook subscription to ``url`` for incident.acknowledged; its signing secret."""
        sub = Subscription(url, secret or secrets.token_urlsafe(32))
        self.subscriptions.append(sub)
        return sub

    def open_alert(self, dedup_key: str) -> Alert | None:
        for alert in reversed(self.alerts):
            if alert.dedup_key == dedup_key and alert.status != "resolved":
                return alert
        return None

    async def acknowledge(self, dedup_key: str, agent: str = "Pat Oncall") -> Alert | None:
        """A responder acknowledges the incident in PagerDuty: webhooks go out, signed."""
        alert = self.open_alert(dedup_key)
        if alert is None or alert.status == "acknowledged":
            return alert
        alert.status, alert.acknowledged_by = "acknowledged", agent
        alert.log.append({"action": "acknowledge", "at": _now(), "by": agent})
        self._tell("acknowledged in PagerDuty", alert)
        await self._deliver("incident.acknowledged", alert, agent)
        return alert

    # The Events API.

    def _tell(self, what: str, alert: Alert) -> None:
        for listener in self.listeners:
            listener(what, alert)

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.events.append({"at": _now(), "body": body})
        if self.fault is not None:
            fault = self.fault
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.fault = None
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
            if fault.status == 429:
                return web.json_response(
                    {"status": "throttle exceeded", "message": "Requests for this service are "
                     "arriving too quickly. Please retry later."},
                    status=429, headers=headers,
                )  # fmt: skip
            return web.Response(status=fault.status, text="Internal Server Error", headers=headers)
        errors = self._invalid(body)
        if errors:
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                status=400,
            )
        assert isinstance(body, dict)
        key = body.get("dedup_key") or uuid.uuid4().hex
        self._apply(body, key)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    @staticmethod
    def _invalid(body: object) -> list[str]:
        if not isinstance(body, dict):
            return ["Event object must be a JSON object"]
        errors = []
        key = body.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            errors.append("'routing_key' must be a 32 character Integration Key")
        action = body.get("event_action")
        if action not in ACTIONS:
            errors.append("'event_action' must be one of trigger, acknowledge, resolve")
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action != "trigger":
            if action in ACTIONS and not dedup:
                errors.append("'dedup_key' is required for acknowledge and resolve events")
            return errors
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or not an object"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary:
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            errors.append("'payload.summary' must be at most 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload.get("source"):
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append("'payload.severity' must be one of critical, error, warning, info")
        return errors

    def _apply(self, body: dict[str, Any], key: str) -> None:
        action = body["event_action"]
        alert = self.open_alert(key)
        entry = {"action": action, "at": _now()}
        if action == "trigger":
            payload = body["payload"]
            entry["summary"] = payload["summary"]
            if alert is None:
                alert = Alert(key, body["routing_key"], payload["summary"], payload["severity"],
                              next(self._numbers))  # fmt: skip
                alert.log.append(entry)
                self.alerts.append(alert)
                self._tell("triggered", alert)
            elif alert.routing_key == body["routing_key"]:
                alert.log.append(entry)  # appended to the open alert's log
                self._tell("updated", alert)
            return
        # Acknowledge and resolve apply only to an open alert, through the same routing key.
        if alert is None or alert.routing_key != body["routing_key"]:
            return
        alert.log.append(entry)
        if action == "acknowledge" and alert.status == "triggered":
            alert.status = "acknowledged"
            self._tell("acknowledged by the bot", alert)
            # PagerDuty tells the webhook subscribers of every acknowledgement, the Events
            # API's too, after it answered (https://developer.pagerduty.com/docs/webhooks-overview,
            # incident.acknowledged): the bot hears of its own acknowledgement.
            task = asyncio.get_running_loop().create_task(
                self._deliver("incident.acknowledged", alert, EVENTS_API_AGENT)
            )
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        elif action == "resolve":
            alert.status = "resolved"
            self._tell("resolved", alert)

    # Webhooks out.

    def _webhook(self, event_type: str, alert: Alert, agent: str) -> dict[str, Any]:
        """A V3 webhook payload (https://developer.pagerduty.com/docs/webhooks-overview)."""
        return {
            "event": {
                "id": uuid.uuid4().hex,
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": _now(),
                "agent": {"id": "PSBXUSR", "summary": agent, "type": "user_reference"},
                "client": None,
                "data": {
                    "id": alert.incident_id,
                    "type": "incident",
                    "number": alert.number,
                    "status": alert.status,
                    "incident_key": alert.dedup_key,
                    "title": alert.summary,
                    "urgency": "high",
                },
            }
        }

    async def _deliver(self, event_type: str, alert: Alert, agent: str) -> None:
        body = json.dumps(self._webhook(event_type, alert, agent)).encode()
        async with aiohttp.ClientSession() as http:
            for sub in self.subscriptions:
                sig = hmac.new(sub.secret.encode(), body, hashlib.sha256).hexdigest()
                headers = {
                    "Content-Type": "application/json",
                    "X-PagerDuty-Signature": f"v1={sig}",
                    "X-Webhook-Id": uuid.uuid4().hex,
                }
                try:
                    async with http.post(sub.url, data=body, headers=headers) as resp:
                        sub.deliveries.append(resp.status)
                except aiohttp.ClientError:
                    sub.deliveries.append(0)

    # The control endpoints.

    async def _set_fault(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.fail(int(data.get("status", 503)), data.get("count"), data.get("retry_after"))
        return web.json_response({"fault": data})

    async def _heal(self, request: web.Request) -> web.Response:
        self.heal()
        return web.json_response({"fault": None})

    async def _list_alerts(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "dedup_key": a.dedup_key,
                    "status": a.status,
                    "summary": a.summary,
                    "number": a.number,
                    "log": a.log,
                }
                for a in self.alerts
            ]
        )

    async def _acknowledge(self, request: web.Request) -> web.Response:
        agent = request.query.get("agent", "Pat Oncall")
        alert = await self.acknowledge(request.match_info["key"], agent)
        if alert is None:
            return web.json_response({"error": "no open alert with that dedup_key"}, status=404)
        return web.json_response({"dedup_key": alert.dedup_key, "status": alert.status})
