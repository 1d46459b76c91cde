"""Cloudflare's Notifications in the stand-in: webhook destinations, policies, and dispatch.

Written from Cloudflare's documentation, sharing no code with the bot:
- API (developers.cloudflare.com/api/resources/alerting/subresources/destinations/subresources/
  webhooks/ and .../alerting/subresources/policies/): ``/accounts/{account_id}/alerting/v3/
  destinations/webhooks`` and ``/accounts/{account_id}/alerting/v3/policies``, each with GET/POST
  and ``/{id}`` GET/PUT/DELETE, in Cloudflare's envelope; a webhook's secret "is not returned in
  any API response body"; a policy's PUT changes only the fields it carries.
- notifications/get-started/configure-webhooks/: "Save and Test" sends a test message
  (``{"text": "Hello World! ..."}``) and a generic webhook carries the destination's secret in
  the ``cf-webhook-auth`` header of every request. A destination whose test is not answered 2xx
  is refused (the wording of that error is not documented: it is the stand-in's).
- notifications/reference/webhook-payload-schema/: every notification is ``name``, ``text``,
  ``data``, ``ts`` (unix seconds), ``account_id``, ``policy_id``, ``policy_name``, ``alert_type``,
  ``alert_correlation_id``, ``alert_event`` (ALERT_STATE_EVENT_START / _END).
- load-balancing/reference/migration-guides/health-monitor-notifications/: the
  ``load_balancing_health_alert`` policy filters on ``pool_id``, ``new_health`` ("Unhealthy",
  "Healthy") and ``event_source`` ("pool", "origin").

The payload page has no Load Balancing example; the alert's ``data`` here carries ``pool_id``,
``pool_name``, ``event_source``, ``new_health``, ``reason`` and, for an origin, ``origin_name``
and ``origin_address`` (the filter's vocabulary, as integrations of the alert read it). Not
modelled: "dispatched only to a publicly resolvable IP address on port 80 or 443" (the sandbox
lives on loopback). Not documented, chosen here: a failed delivery is tried 3 times in all, 1 s
then 2 s apart, each POST given 5 s.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

HEALTH_ALERT = "load_balancing_health_alert"
# The alert types a policy may name (the API's enum, cloudflare/types/alerting/policy.py); the
# stand-in dispatches only the Load Balancing health alert, but stores any documented type.
ALERT_TYPES = frozenset(
    {
        HEALTH_ALERT,
        "load_balancing_pool_enablement_alert",
        "health_check_status_notification",
        "http_alert_origin_error",
        "http_alert_edge_error",
        "universal_ssl_event_type",
        "billing_usage_alert",
    }
)
TEST_TEXT = (
    "Hello World! This is a test message sent from https://cloudflare.com. If you can see "
    "this, your webhook is configured properly."
)
AUTH_HEADER = "cf-webhook-auth"
POLICY_FIELDS = frozenset(
    {"name", "description", "alert_type", "enabled", "mechanisms", "filters", "alert_interval"}
)
WEBHOOK_FIELDS = frozenset({"name", "url", "secret"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _envelope(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _error(status: int, code: int, message: str) -> web.Response:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return web.json_response(body, status=status)


def _bad(message: str) -> web.Response:
    return _error(400, 1002, message)


def _missing(what: str) -> web.Response:
    return _error(404, 1000, f"{what} not found")


@dataclass(frozen=True)
class HealthChange:
    """A change the stand-in's monitor made: when (wall clock), to what, and why."""

    at: float
    pool_id: str
    pool_name: str
    origin_name: str | None  # None: the pool's own health changed
    origin_address: str | None
    healthy: bool
    reason: str

    @property
    def event_source(self) -> str:
        return "pool" if self.origin_name is None else "origin"

    @property
    def new_health(self) -> str:
        return "Healthy" if self.healthy else "Unhealthy"


@dataclass(frozen=True)
class Delivery:
    """One POST to a destination: what was sent and how the receiver answered."""

    at: float
    webhook_id: str
    url: str
    payload: dict[str, Any]
    status: int | None  # None: no HTTP answer
    error: str = ""
    attempt: int = 1

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Alerting:
    """Destinations, policies and the dispatcher of one account's notifications."""

    def __init__(
        self,
        account_id: str,
        *,
        attempts: int = 3,
        backoff: tuple[float, ...] = (1.0, 2.0),
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account_id = account_id
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.clock = clock
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, str] = {}  # webhook id -> secret (never answered back)
        self.policies: dict[str, dict[str, Any]] = {}
        self.changes: list[HealthChange] = []
        self.deliveries: list[Delivery] = []
        # Told of every delivery as it happens (the demo's terminal shows them).
        self.listeners: list[Callable[[Delivery], None]] = []
        self._correlation: dict[tuple[str, str | None], str] = {}
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------------- lifecycle

    def routes(self, app: web.Application, base: str) -> None:
        hooks = base + "/accounts/{account}/alerting/v3/destinations/webhooks"
        app.router.add_get(hooks, self._list_webhooks)
        app.router.add_post(hooks, self._create_webhook)
        app.router.add_get(hooks + "/{webhook}", self._get_webhook)
        app.router.add_put(hooks + "/{webhook}", self._update_webhook)
        app.router.add_delete(hooks + "/{webhook}", self._delete_webhook)
        policies = base + "/accounts/{account}/alerting/v3/policies"
        app.router.add_get(policies, self._list_policies)
        app.router.add_post(policies, self._create_policy)
        app.router.add_get(policies + "/{policy}", self._get_policy)
        app.router.add_put(policies + "/{policy}", self._update_policy)
        app.router.add_delete(policies + "/{policy}", self._delete_policy)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # A new connection for each POST: a receiver closing an idle keep-alive connection
            # must not turn into a failed delivery.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(self.timeout),
            )
        return self._session

    async def close(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        if self._session is not None:
            await self._session.close()

    # ----------------------------------------------------------------- delivery

    async def _post(self, url: str, secret: str | None, payload: dict[str, Any]) -> Delivery:
        headers = {AUTH_HEADER: secret} if secret else {}
        try:
            async with self._http().post(url, json=payload, headers=headers) as response:
                await response.read()
                status: int | None = response.status
                error = ""
        except TimeoutError:
            status, error = None, f"no answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            status, error = None, type(exc).__name__
        return Delivery(self.clock(), "", url, payload, status, error)

    async def _test(self, url: str, secret: str | None) -> str | None:
        """Cloudflare's "Save and Test": None when the URL answered 2xx, else why not."""
        result = await self._post(url, secret, {"text": TEST_TEXT})
        if result.ok:
            return None
        answer = f"answered HTTP {result.status}" if result.status else result.error
        return f"Failed to send a test message to {url}: {answer}"

    def health_changed(self, change: HealthChange) -> None:
        """Record a change of the monitor and queue its notifications; never blocks."""
        self.changes.append(change)
        key = (change.pool_id, change.origin_name)
        if change.healthy:
            correlation = self._correlation.pop(key, None) or uuid.uuid4().hex
        else:
            correlation = self._correlation.setdefault(key, uuid.uuid4().hex)
        for policy in self.policies.values():
            if not self._matches(policy, change):
                continue
            for mechanism in (policy.get("mechanisms") or {}).get("webhooks") or []:
                webhook_id = str(mechanism.get("id", ""))
                if webhook_id in self.webhooks:
                    payload = self._payload(policy, change, correlation)
                    self._queue(webhook_id).put_nowait(payload)

    @staticmethod
    def _matches(policy: dict[str, Any], change: HealthChange) -> bool:
        if not policy.get("enabled") or policy.get("alert_type") != HEALTH_ALERT:
            return False
        filters = policy.get("filters") or {}
        pools = filters.get("pool_id")
        if pools and change.pool_id not in pools:
            return False
        healths = filters.get("new_health")
        if healths and change.new_health.lower() not in {str(h).lower() for h in healths}:
            return False
        sources = filters.get("event_source")
        return not sources or change.event_source in {str(s).lower() for s in sources}

    def _payload(
        self, policy: dict[str, Any], change: HealthChange, correlation: str
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pool_id": change.pool_id,
            "pool_name": change.pool_name,
            "event_source": change.event_source,
            "new_health": change.new_health,
            "reason": change.reason,
        }
        subject = f"Pool {change.pool_name}"
        if change.origin_name is not None:
            data["origin_name"] = change.origin_name
            data["origin_address"] = change.origin_address
            subject = f"Endpoint {change.origin_name} in pool {change.pool_name}"
        because = "" if change.healthy else f": {change.reason}"
        return {
            "name": policy["name"],
            "text": f"{subject} is now {change.new_health}{because}",
            "data": data,
            "ts": int(change.at),
            "account_id": self.account_id,
            "policy_id": policy["id"],
            "policy_name": policy["name"],
            "alert_type": HEALTH_ALERT,
            "alert_correlation_id": correlation,
            "alert_event": "ALERT_STATE_EVENT_END" if change.healthy else "ALERT_STATE_EVENT_START",
        }

    def _queue(self, webhook_id: str) -> asyncio.Queue[dict[str, Any]]:
        # One worker per destination: its notifications arrive in order, and a slow receiver
        # holds back only its own.
        queue = self._queues.get(webhook_id)
        if queue is None:
            queue = self._queues[webhook_id] = asyncio.Queue()
        if webhook_id not in self._workers or self._workers[webhook_id].done():
            self._workers[webhook_id] = asyncio.create_task(self._deliver(webhook_id, queue))
        return queue

    async def _deliver(self, webhook_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            payload = await queue.get()
            for attempt in range(1, self.attempts + 1):
                webhook = self.webhooks.get(webhook_id)
                if webhook is None:
                    break  # deleted meanwhile
                sent = await self._post(webhook["url"], self.secrets.get(webhook_id), payload)
                delivery = Delivery(
                    sent.at, webhook_id, sent.url, payload, sent.status, sent.error, attempt
                )
                self.deliveries.append(delivery)
                for listener in self.listeners:
                    listener(delivery)
                stamp = _now()
                if delivery.ok:
                    webhook["last_success"] = stamp
                    break
                webhook["last_failure"] = stamp
                log.warning(
                    "notification to %s failed (attempt %d of %d): %s",
                    sent.url,
                    attempt,
                    self.attempts,
                    f"HTTP {sent.status}" if sent.status else sent.error,
                )
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff[min(attempt, len(self.backoff)) - 1])

    # ----------------------------------------------------------------- webhooks

    @staticmethod
    def _webhook_error(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        unknown = set(body) - WEBHOOK_FIELDS
        if unknown:
            return f"unknown fields: {', '.join(sorted(unknown))}"
        for key in ("name", "url"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                return f"{key} is required"
        if not body["url"].startswith(("http://", "https://")):
            return "url must be an http(s) URL"
        if "secret" in body and not isinstance(body["secret"], str):
            return "secret must be a string"
        return None

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        return web.json_response(_envelope([copy.deepcopy(w) for w in self.webhooks.values()]))

    async def _get_webhook(self, request: web.Request) -> web.Response:
        webhook = self.webhooks.get(request.match_info["webhook"])
        if webhook is None:
            return _missing("webhook")
        return web.json_response(_envelope(copy.deepcopy(webhook)))

    async def _create_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._webhook_error(body)
        if problem is not None:
            return _bad(problem)
        failed = await self._test(body["url"], body.get("secret"))
        if failed is not None:
            return _bad(failed)
        webhook_id = str(uuid.uuid4())
        self.webhooks[webhook_id] = {
            "id": webhook_id,
            "name": body["name"],
            "url": body["url"],
            "type": "generic",
            "created_at": _now(),
        }
        if body.get("secret"):
            self.secrets[webhook_id] = body["secret"]
        return web.json_response(_envelope({"id": webhook_id}))

    async def _update_webhook(self, request: web.Request) -> web.Response:
        webhook_id = request.match_info["webhook"]
        webhook = self.webhooks.get(webhook_id)
        if webhook is None:
            return _missing("webhook")
        body = await request.json()
        problem = self._webhook_error(body)
        if problem is not None:
            return _bad(problem)
        secret = body["secret"] if "secret" in body else self.secrets.get(webhook_id)
        failed = await self._test(body["url"], secret)
        if failed is not None:
            return _bad(failed)
        webhook.update(name=body["name"], url=body["url"])
        if secret:
            self.secrets[webhook_id] = secret
        else:
            self.secrets.pop(webhook_id, None)
        return web.json_response(_envelope({"id": webhook_id}))

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        webhook_id = request.match_info["webhook"]
        if self.webhooks.pop(webhook_id, None) is None:
            return _missing("webhook")
        self.secrets.pop(webhook_id, None)
        worker = self._workers.pop(webhook_id, None)
        if worker is not None:
            worker.cancel()
        self._queues.pop(webhook_id, None)
        return web.json_response({"success": True, "errors": [], "messages": []})

    # ----------------------------------------------------------------- policies

    def _policy_error(self, body: Any, creating: bool) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        unknown = set(body) - POLICY_FIELDS
        if unknown:
            return f"unknown fields: {', '.join(sorted(unknown))}"
        if creating:
            absent = [k for k in ("name", "alert_type", "enabled", "mechanisms") if k not in body]
            if absent:
                return f"{', '.join(absent)} required"
        if "name" in body and (not isinstance(body["name"], str) or not body["name"].strip()):
            return "name must be a non-empty string"
        if "alert_type" in body and body["alert_type"] not in ALERT_TYPES:
            return f"unknown alert_type {body['alert_type']!r}"
        if "enabled" in body and not isinstance(body["enabled"], bool):
            return "enabled must be true or false"
        mechanisms = body.get("mechanisms", {})
        if not isinstance(mechanisms, dict):
            return "mechanisms must be an object"
        for entry in mechanisms.get("webhooks") or []:
            if not isinstance(entry, dict) or entry.get("id") not in self.webhooks:
                return f"webhook destination {entry!r} does not exist"
        filters = body.get("filters", {})
        if not isinstance(filters, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in filters.values()
        ):
            return "filters must map names to lists of strings"
        return None

    async def _list_policies(self, request: web.Request) -> web.Response:
        return web.json_response(_envelope([copy.deepcopy(p) for p in self.policies.values()]))

    async def _get_policy(self, request: web.Request) -> web.Response:
        policy = self.policies.get(request.match_info["policy"])
        if policy is None:
            return _missing("policy")
        return web.json_response(_envelope(copy.deepcopy(policy)))

    async def _create_policy(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._policy_error(body, creating=True)
        if problem is not None:
            return _bad(problem)
        policy_id = str(uuid.uuid4())
        stamp = _now()
        self.policies[policy_id] = {
            "id": policy_id,
            "description": "",
            "filters": {},
            **copy.deepcopy(body),
            "created": stamp,
            "modified": stamp,
        }
        return web.json_response(_envelope({"id": policy_id}))

    async def _update_policy(self, request: web.Request) -> web.Response:
        policy_id = request.match_info["policy"]
        policy = self.policies.get(policy_id)
        if policy is None:
            return _missing("policy")
        body = await request.json()
        problem = self._policy_error(body, creating=False)
        if problem is not None:
            return _bad(problem)
        policy.update(copy.deepcopy(body))
        policy["modified"] = _now()
        return web.json_response(_envelope({"id": policy_id}))

    async def _delete_policy(self, request: web.Request) -> web.Response:
        if self.policies.pop(request.match_info["policy"], None) is None:
            return _missing("policy")
        return web.json_response({"success": True, "errors": [], "messages": []})
