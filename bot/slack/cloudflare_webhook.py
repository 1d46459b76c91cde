"""``POST /cloudflare/notifications``: Cloudflare's notifications in, stored for the lease holder.

Cloudflare's generic webhook (https://developers.cloudflare.com/notifications/get-started/configure-
webhooks/#generic-webhooks) sends the destination's secret in the ``cf-webhook-auth`` header of
every request, and a test POST whose body is only ``{"text": "Hello World! ..."}`` when the
destination is created or updated (it must be answered 2xx). The payload of a notification
(https://developers.cloudflare.com/notifications/reference/webhook-payload-schema/): ``name``,
``text``, ``data`` (by ``alert_type``), ``ts`` (Unix seconds, UTC, when it was generated),
``account_id``, ``policy_id``, ``policy_name``, ``alert_type``, ``alert_correlation_id``,
``alert_event``; ``account_id``, ``policy_id`` and ``alert_type`` may be absent.

Any instance may receive one: it is checked here, stored, and answered at once; the lease holder
applies it (bot/watch.py). Refusals are one log line each and a short answer: 404 while
CLOUDFLARE_WEBHOOK_SECRET is unset, 401 without the secret, 403 from another account, 400
malformed, 408 a body too slow, 413 over 64 KiB; nothing is stored for any of them.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import CloudflareNotification
from bot.slack.bodies import BodyRefused, read_body
from bot.slack.guard import Refused, refusal

log = logging.getLogger(__name__)

PATH = "/cloudflare/notifications"
MAX_BODY = 64 * 1024  # a notification is well under 4 KiB
HEALTH_ALERT = "load_balancing_health_alert"
HEADER = "cf-webhook-auth"


class Payload(BaseModel):
    """The generic webhook payload; fields Cloudflare adds later are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    text: str = ""
    data: dict[str, Any] = {}
    # Seconds since the epoch; bounded to what a datetime holds (a wild value is a bad body).
    ts: int | None = Field(default=None, ge=0, le=253_402_300_799)
    account_id: str | None = None
    policy_id: str | None = None
    policy_name: str | None = None
    alert_type: str | None = None
    alert_correlation_id: str | None = None
    alert_event: str | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v: object) -> object:
        return {} if v is None else v


def _cut(value: str | None, length: int) -> str | None:
    """Within the column's length (PostgreSQL refuses longer; Cloudflare's ids are 32 chars)."""
    return value[:length] if value is not None else None


def _text(data: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class HealthAlert(BaseModel):
    """The ``data`` of a Load Balancing health alert, read tolerantly.

    Cloudflare documents the alert's filters (pool_id, new_health "Healthy"/"Unhealthy",
    event_source "pool"/"origin": https://developers.cloudflare.com/notifications/notification-
    available/#load-balancing) but not its ``data``. Assumed here: the same keys as the filters,
    with ``pool_name``, ``origin_name`` and a ``reason``; older or other spellings (``pool``,
    ``origin``, ``endpoint_name``, ``health``, a boolean ``healthy``) are accepted too, health words
    in any case. Health that is neither word is kept as unknown: Cloudflare delivers changes it
    cannot classify as healthy or unhealthy without that state (its 2026-08-07 changelog).
    """

    pool_id: str | None = None
    pool_name: str | None = None
    origin: str | None = None
    healthy: bool | None = None
    event_source: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> HealthAlert:
        health = data.get("new_health", data.get("health", data.get("healthy")))
        healthy: bool | None = None
        if isinstance(health, bool):
            healthy = health
        elif isinstance(health, str):
            healthy = {"healthy": True, "unhealthy": False}.get(health.strip().lower())
        origin = _text(data, "origin_name", "origin", "endpoint_name", "endpoint")
        source = (_text(data, "event_source") or ("origin" if origin else "pool")).lower()
        return cls(
            pool_id=_text(data, "pool_id"),
            pool_name=_text(data, "pool_name", "pool"),
            origin=origin if source in ("origin", "endpoint") else None,
            healthy=healthy,
            event_source=source,
            reason=_text(data, "reason", "health_check_reason", "failure_reason"),
        )


def _health_alert(payload: Payload) -> HealthAlert | None:
    """The health alert a notification is, if it is one: by its ``alert_type``, or, when that is
    missing, by its ``data`` (a health and a pool, as a health alert's data has them)."""
    if payload.alert_type is not None:
        return HealthAlert.of(payload.data) if payload.alert_type == HEALTH_ALERT else None
    alert = HealthAlert.of(payload.data)
    health_given = any(k in payload.data for k in ("new_health", "health", "healthy"))
    return alert if health_given and (alert.pool_id or alert.pool_name) else None


class NotificationReceiver:
    """The route's handler: ``notified`` is called after a health alert is stored (the lease
    holder, when this instance is it, applies it at once rather than at its next tick)."""

    def __init__(
        self,
        secret: str | None,
        account_id: str | None,
        sessions: async_sessionmaker[AsyncSession] | None,
        *,
        notified: Callable[[], None] | None = None,
        body_timeout: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.secret = secret
        self.account_id = account_id
        self.sessions = sessions
        self.notified = notified or (lambda: None)
        self.body_timeout = body_timeout
        self.clock = clock

    def _authenticate(self, request: web.Request, secret: str) -> None:
        sent = request.headers.getall(HEADER, [])
        if not sent:
            raise Refused(401, f"no {HEADER} header")
        if len(sent) > 1:
            raise Refused(401, f"{HEADER} sent {len(sent)} times")
        # Bytes: compare_digest refuses non-ASCII str; the secret's length is not hidden, the
        # value is (compared in constant time whatever its length).
        given = sent[0].encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, secret.encode()):
            raise Refused(401, f"wrong {HEADER} (not CLOUDFLARE_WEBHOOK_SECRET)")

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await read_body(request, self.body_timeout, MAX_BODY)
        except BodyRefused as refused:
            raise Refused(refused.status, refused.reason) from None

    @staticmethod
    def _parse(raw: bytes) -> Payload:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused(400, "malformed body: not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, f"malformed body: a JSON {type(body).__name__}, not an object")
        try:
            return Payload.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise Refused(400, f"malformed body: {where}: {first['msg']}") from None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.secret:
            return web.Response(
                status=404,
                text="Cloudflare notifications are not configured here "
                "(CLOUDFLARE_WEBHOOK_SECRET is not set)\n",
            )
        try:
            self._authenticate(request, self.secret)
            payload = self._parse(await self._body(request))
            if payload.account_id and self.account_id and payload.account_id != self.account_id:
                raise Refused(403, f"from account {payload.account_id[:40]!r}, not ours")
        except Refused as refused:
            return await refusal(request, refused)
        if payload.alert_type is None and not payload.data:
            # Cloudflare's test when the destination is saved: proves the URL and the secret.
            # Only without data too: alert_type "may not be present in all notifications"
            # (https://developers.cloudflare.com/notifications/reference/webhook-payload-schema/).
            log.info("Cloudflare's test notification received: %.120s", payload.text)
            return web.json_response({"ok": True, "test": True})
        if self.sessions is None:
            log.error("Cloudflare notification not stored: no database")
            return web.json_response({"ok": False, "error": "no database"}, status=503)
        try:
            stored = await self._store(payload)
        except Exception as exc:
            # Cloudflare retries a delivery that failed; the bot says why once.
            log.error("Cloudflare notification not stored: %s", exc)
            return web.json_response({"ok": False, "error": "not stored"}, status=503)
        if stored.handled_at is None:  # a health alert, for the lease holder to apply
            self.notified()
        return web.json_response({"ok": True, "id": stored.id, "result": stored.result})

    async def _store(self, payload: Payload) -> CloudflareNotification:
        now = self.clock()
        at = datetime.fromtimestamp(payload.ts, UTC) if payload.ts is not None else now
        alert = _health_alert(payload)
        row = CloudflareNotification(
            received_at=now,
            notified_at=at,
            alert_type=_cut(payload.alert_type, 64) or "",
            alert_event=_cut(payload.alert_event, 64),
            correlation_id=_cut(payload.alert_correlation_id, 64),
            policy_id=_cut(payload.policy_id, 64),
            # The pool by name; by id only when Cloudflare gave no name (the watch maps ids).
            pool=_cut((alert.pool_name or alert.pool_id) if alert else None, 128),
            origin=_cut(alert.origin if alert else None, 255),
            healthy=alert.healthy if alert else None,
            text=payload.text,
            data=payload.data,
        )
        if alert is None:
            # Other alerts are kept for the record, never applied.
            what = payload.alert_type or "no alert_type, and its data is no health alert"
            row.handled_at, row.result = now, f"ignored: {what}"[:128]
            log.info("Cloudflare notification not used by the bot: %s", what)
        assert self.sessions is not None  # checked by the caller
        async with self.sessions.begin() as session:
            session.add(row)
        return row
