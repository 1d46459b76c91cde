"""A Cloudflare stand-in: the load-balancing API the bot uses, its monitor, and faults on demand.

State is kept as the JSON Cloudflare returns, so a PATCH is seen by the next GET. Its own monitor
probes the sandbox gateways with the monitor's settings and the same probe semantics as
Cloudflare; pool and origin ``healthy``, the pool health per location and the health events
follow from it. Configuration changes reach the data plane (``DataPlane``) after a propagation
delay. ``/_sandbox/faults`` turns on 429s, 500s, slow answers or a token without permission.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.fleet import Fleet, MonitorSettings, Origin
from bot.health import Prober
from bot.sandbox.servers import LocalServer

LOCATIONS = ("Ashburn, US", "Frankfurt, DE", "Singapore, SG")
ERROR_TEXT = {
    400: (1002, "Bad request"),
    401: (10000, "Authentication error"),
    403: (10000, "Authentication error"),
    404: (1000, "Not found"),
    429: (1015, "You are being rate limited"),
    500: (1001, "Internal server error"),
}


def cf_id(*parts: str) -> str:
    return hashlib.md5("/".join(parts).encode()).hexdigest()  # an id, not a secret


def stamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def envelope(result: Any, info: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return body


def error_response(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    code, text = ERROR_TEXT.get(status, (1000, "Error"))
    body = {
        "success": False,
        "errors": [{"code": code, "message": message or text}],
        "messages": [],
        "result": None,
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Fault:
    kind: str  # 429, 500, slow, forbidden, events_forbidden
    remaining: int | None  # None: until cleared
    delay: float = 0.0
    retry_after: int = 1
    method: str | None = None  # only requests of this method (e.g. PATCH: only the changes)


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str  # below /client/v4
    query: dict[str, str]
    request_body: bytes
    status: int
    response_body: bytes
    content_type: str


@dataclass
class OriginHealth:
    healthy: bool = True
    failure_reason: str = "No failures"
    response_code: int | None = 200
    rtt: str = "0.0ms"
    streak: int = 0  # consecutive checks disagreeing with ``healthy``


class CloudflareStandIn:
    def __init__(
        self,
        fleet: Fleet,
        origin_urls: dict[str, str],
        *,
        token: str = "sandbox-cloudflare-token",
        monitor_interval: float | None = None,
        propagation: float = 1.0,
        port: int | None = None,
    ) -> None:
        self.token = token
        self.account_id = cf_id("account", fleet.load_balancer.name)
        self.zone_id = cf_id("zone", fleet.load_balancer.hostname)
        self.propagation = propagation
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        # Every API exchange, for checking both sides against Cloudflare's OpenAPI description.
        self.exchanges: list[Exchange] = []
        self.events: list[dict[str, Any]] = []
        self._event_ids = itertools.count(1)
        self.origin_urls = origin_urls  # origin name -> URL the monitor probes
        self.health: dict[tuple[str, str], OriginHealth] = {}
        now = stamp()
        m = fleet.monitor
        self.monitor_id = cf_id("monitor", fleet.load_balancer.name)
        self.monitors: dict[str, dict[str, Any]] = {
            self.monitor_id: {
                "id": self.monitor_id,
                "created_on": now,
                "modified_on": now,
                "type": "http",
                "description": f"{fleet.load_balancer.name} health check",
                "method": m.method,
                "path": m.path,
                # The seed's monitor headers: Cloudflare's agent, whatever the bot sends.
                "header": {"User-Agent": ["Cloudflare-Health-Check"]},
                "port": 0,
                "timeout": int(m.timeout) or 1,
                "retries": m.retries,
                "interval": max(1, round(monitor_interval or m.interval)),
                "expected_codes": m.expected_codes,
                "expected_body": m.expected_body,
                "follow_redirects": True,
                "allow_insecure": False,
                "consecutive_down": m.consecutive_down,
                "consecutive_up": m.consecutive_up,
                "probe_zone": "",
            }
        }
        self.pools: dict[str, dict[str, Any]] = {}
        for region in fleet.regions.values():
            pool_id = cf_id("pool", region.pool)
            self.pools[pool_id] = {
                "id": pool_id,
                "created_on": now,
                "modified_on": now,
                "name": region.pool,
                "description": f"{region.name} ({region.role})",
                "enabled": True,
                "minimum_origins": region.minimum_origins,
                "monitor": self.monitor_id,
                "notification_email": "",
                "origin_steering": {"policy": "random"},
                "origins": [
                    {
                        "name": o.name,
                        "address": origin_urls[o.name].split("://", 1)[1],
                        "enabled": o.enabled,
                        "weight": o.weight,
                        "header": {},
                    }
                    for o in region.origins
                ],
            }
            for o in region.origins:
                self.health[(pool_id, o.name)] = OriginHealth()
        by_region = {r.name: cf_id("pool", r.pool) for r in fleet.regions.values()}
        lb = fleet.load_balancer
        self.lb_id = cf_id("lb", lb.hostname)
        self.lbs: dict[str, dict[str, Any]] = {
            self.lb_id: {
                "id": self.lb_id,
                "created_on": now,
                "modified_on": now,
                "name": lb.hostname,
                "description": lb.name,
                "enabled": True,
                "proxied": True,
                "ttl": 30,
                "steering_policy": lb.steering_policy,
                "session_affinity": lb.session_affinity,
                "session_affinity_ttl": 82800,
                "default_pools": [by_region[n] for n in lb.default_pools],
                "fallback_pool": by_region[lb.fallback_pool],
                "region_pools": {
                    g: [by_region[n] for n in names] for g, names in lb.region_pools.items()
                },
                "pop_pools": {},
                "country_pools": {},
            }
        }
        # (effective from, load balancer, pools): what the data plane sees, after propagation.
        self._config: list[tuple[float, dict[str, Any], dict[str, dict[str, Any]]]] = []
        self._snapshot(delay=0.0)
        self._monitor_task: asyncio.Task[None] | None = None
        self._prober: Prober | None = None
        app = web.Application(middlewares=[self._gate])
        base = "/client/v4"
        app.router.add_get(base + "/accounts/{account}/load_balancers/pools", self._list_pools)
        app.router.add_get(base + "/accounts/{account}/load_balancers/pools/{pool}", self._get_pool)
        app.router.add_patch(
            base + "/accounts/{account}/load_balancers/pools/{pool}", self._patch_pool
        )
        app.router.add_get(
            base + "/accounts/{account}/load_balancers/pools/{pool}/health", self._pool_health
        )
        app.router.add_get(
            base + "/accounts/{account}/load_balancers/monitors", self._list_monitors
        )
        app.router.add_get(
            base + "/accounts/{account}/load_balancers/monitors/{monitor}", self._get_monitor
        )
        app.router.add_get(base + "/zones/{zone}/load_balancers", self._list_lbs)
        app.router.add_get(base + "/zones/{zone}/load_balancers/{lb}", self._get_lb)
        app.router.add_patch(base + "/zones/{zone}/load_balancers/{lb}", self._patch_lb)
        app.router.add_get(base + "/user/load_balancing_analytics/events", self._events)
        app.router.add_post("/_sandbox/faults", self._set_faults)
        app.router.add_get("/_sandbox/state", self._state)
        self.server = LocalServer(app, port)

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/client/v4"

    async def start(self) -> None:
        await self.server.start()
        self._prober = Prober(self._monitor_settings())
        self._monitor_task = asyncio.create_task(self._monitor_loop())

    async def close(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            await asyncio.gather(self._monitor_task, return_exceptions=True)
        if self._prober is not None:
            await self._prober.aclose()
        await self.server.close()

    # ----------------------------------------------------------------- health

    def _monitor_settings(self) -> MonitorSettings:
        m = self.monitors[self.monitor_id]
        return MonitorSettings(
            method=m["method"],
            path=m["path"],
            timeout=float(m["timeout"]),
            retries=m["retries"],
            interval=float(m["interval"]),
            expected_codes=m["expected_codes"],
            expected_body=m["expected_body"],
            headers={k: v[0] for k, v in m["header"].items()},
        )

    def pool_healthy(self, pool_id: str) -> bool:
        pool = self.pools[pool_id]
        up = sum(
            1 for o in pool["origins"] if o["enabled"] and self.health[(pool_id, o["name"])].healthy
        )
        return up >= int(pool["minimum_origins"])

    async def check_now(self) -> None:
        """One round of the monitor over every enabled origin of every enabled pool."""
        assert self._prober is not None
        m = self.monitors[self.monitor_id]
        targets = [
            (pool_id, Origin(name=o["name"], url=self.origin_urls[o["name"]]))
            for pool_id, pool in self.pools.items()
            if pool["enabled"]  # disabled pools get no health checks
            for o in pool["origins"]
            if o["enabled"]
        ]
        results = await self._prober.probe_all(targets)
        before = {pid: self.pool_healthy(pid) for pid in self.pools}
        changed: dict[str, list[str]] = {}
        for (pool_id, origin), result in zip(targets, results, strict=True):
            h = self.health[(pool_id, origin.name)]
            h.rtt = f"{(result.latency or 0) * 1000:.1f}ms"
            h.response_code = result.status_code
            needed = max(1, m["consecutive_up"] if not h.healthy else m["consecutive_down"])
            if result.healthy != h.healthy:
                h.streak += 1
                if h.streak >= needed:
                    h.healthy, h.streak = result.healthy, 0
                    changed.setdefault(pool_id, []).append(origin.name)
            else:
                h.streak = 0
            h.failure_reason = "No failures" if result.healthy else _failure_reason(result.reason)
        for pool_id in self.pools:
            if pool_id in changed or before[pool_id] != self.pool_healthy(pool_id):
                self._record_event(pool_id, changed.get(pool_id, []), before[pool_id])

    async def _monitor_loop(self) -> None:
        while True:
            started = time.monotonic()
            await self.check_now()
            interval = float(self.monitors[self.monitor_id]["interval"])
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    def _record_event(self, pool_id: str, changed_origins: list[str], was_healthy: bool) -> None:
        pool = self.pools[pool_id]
        healthy = self.pool_healthy(pool_id)
        self.events.append(
            {
                "id": next(self._event_ids),
                "timestamp": stamp(),
                "pool": {
                    "id": pool_id,
                    "name": pool["name"],
                    "healthy": healthy,
                    "changed": healthy != was_healthy,
                    "minimum_origins": pool["minimum_origins"],
                },
                "origins": [
                    {
                        "name": o["name"],
                        "address": o["address"],
                        "ip": o["address"].split(":")[0],
                        "enabled": o["enabled"],
                        "healthy": self.health[(pool_id, o["name"])].healthy,
                        "changed": o["name"] in changed_origins,
                        "failure_reason": self.health[(pool_id, o["name"])].failure_reason,
                    }
                    for o in pool["origins"]
                ],
            }
        )

    # ----------------------------------------------------------------- views

    def pool_view(self, pool_id: str) -> dict[str, Any]:
        """A pool as the API returns it, with the ``healthy`` flags the SDK's model lacks."""
        pool = copy.deepcopy(self.pools[pool_id])
        pool["healthy"] = self.pool_healthy(pool_id)
        for o in pool["origins"]:
            h = self.health[(pool_id, o["name"])]
            o["healthy"] = h.healthy
            o["failure_reason"] = h.failure_reason
        return pool

    def _snapshot(self, delay: float | None = None) -> None:
        effective = time.monotonic() + (self.propagation if delay is None else delay)
        self._config.append(
            (effective, copy.deepcopy(self.lbs[self.lb_id]), copy.deepcopy(self.pools))
        )
        del self._config[:-20]

    def effective_config(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The configuration the edge applies now: the newest one past its propagation delay."""
        now = time.monotonic()
        current = self._config[0]
        for entry in self._config:
            if entry[0] <= now:
                current = entry
        return current[1], current[2]

    # ----------------------------------------------------------------- HTTP

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_sandbox"):
            return await handler(request)  # type: ignore[no-any-return]
        self.requests.append((request.method, request.path))
        response = await self._answer(request, handler)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            self.exchanges.append(
                Exchange(
                    request.method,
                    request.path.removeprefix("/client/v4"),
                    dict(request.query),
                    await request.read(),
                    response.status,
                    response.body,
                    response.content_type,
                )
            )
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error_response(
                401, "Invalid access token" if "Authorization" in request.headers else None
            )
        for fault in list(self.faults):
            if fault.kind == "events_forbidden" and not request.path.endswith("/events"):
                continue
            if fault.method is not None and request.method != fault.method:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "429":
                return error_response(429, headers={"Retry-After": str(fault.retry_after)})
            elif fault.kind == "500":
                return error_response(500)
            elif fault.kind in ("forbidden", "events_forbidden"):
                return error_response(403)
        if request.match_info.get("account", self.account_id) != self.account_id:
            return error_response(403)
        if request.match_info.get("zone", self.zone_id) != self.zone_id:
            return error_response(403)
        return await handler(request)  # type: ignore[no-any-return]

    @staticmethod
    def _page(items: list[Any]) -> web.Response:
        n = len(items)
        return web.json_response(
            envelope(items, {"page": 1, "per_page": max(n, 20), "count": n, "total_count": n})
        )

    async def _list_pools(self, request: web.Request) -> web.Response:
        return self._page([self.pool_view(pid) for pid in self.pools])

    async def _get_pool(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool"]
        if pool_id not in self.pools:
            return error_response(404, "pool not found")
        return web.json_response(envelope(self.pool_view(pool_id)))

    async def _patch_pool(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool"]
        if pool_id not in self.pools:
            return error_response(404, "pool not found")
        body = await request.json()
        pool = self.pools[pool_id]
        writable = {
            "enabled",
            "origins",
            "minimum_origins",
            "description",
            "name",
            "monitor",
            "notification_email",
        }
        unknown = (
            set(body)
            - writable
            - {
                "check_regions",
                "latitude",
                "longitude",
                "origin_steering",
                "load_shedding",
                "notification_filter",
            }
        )
        if unknown:
            return error_response(400, f"unknown fields: {', '.join(sorted(unknown))}")
        if "origins" in body:
            origins = body["origins"]
            allowed = {
                "name",
                "address",
                "enabled",
                "weight",
                "header",
                "virtual_network_id",
                "port",
            }
            for o in origins:
                extra = set(o) - allowed
                if extra:
                    return error_response(
                        400, f"origin fields are read-only: {', '.join(sorted(extra))}"
                    )
            for o in origins:
                self.health.setdefault((pool_id, o["name"]), OriginHealth())
        for key in set(body) & writable:
            pool[key] = body[key]
        pool["modified_on"] = stamp()
        if "enabled" in body:
            pool["disabled_at"] = None if body["enabled"] else stamp()
        self._snapshot()
        return web.json_response(envelope(self.pool_view(pool_id)))

    async def _pool_health(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool"]
        if pool_id not in self.pools:
            return error_response(404, "pool not found")
        pool = self.pools[pool_id]
        origins = [
            {
                o["address"]: {
                    "healthy": self.health[(pool_id, o["name"])].healthy,
                    "rtt": self.health[(pool_id, o["name"])].rtt,
                    "failure_reason": self.health[(pool_id, o["name"])].failure_reason,
                    "response_code": self.health[(pool_id, o["name"])].response_code or 0,
                }
            }
            for o in pool["origins"]
            if o["enabled"]
        ]
        healthy = self.pool_healthy(pool_id)
        pop_health = {loc: {"healthy": healthy, "origins": origins} for loc in LOCATIONS}
        return web.json_response(envelope({"pool_id": pool_id, "pop_health": pop_health}))

    async def _list_monitors(self, request: web.Request) -> web.Response:
        return self._page(list(self.monitors.values()))

    async def _get_monitor(self, request: web.Request) -> web.Response:
        monitor = self.monitors.get(request.match_info["monitor"])
        if monitor is None:
            return error_response(404, "monitor not found")
        return web.json_response(envelope(monitor))

    async def _list_lbs(self, request: web.Request) -> web.Response:
        return self._page(list(self.lbs.values()))

    async def _get_lb(self, request: web.Request) -> web.Response:
        lb = self.lbs.get(request.match_info["lb"])
        if lb is None:
            return error_response(404, "load balancer not found")
        return web.json_response(envelope(lb))

    async def _patch_lb(self, request: web.Request) -> web.Response:
        lb = self.lbs.get(request.match_info["lb"])
        if lb is None:
            return error_response(404, "load balancer not found")
        body = await request.json()
        writable = {
            "default_pools",
            "fallback_pool",
            "region_pools",
            "pop_pools",
            "country_pools",
            "steering_policy",
            "session_affinity",
            "enabled",
            "proxied",
            "description",
            "ttl",
        }
        if set(body) - writable:
            return error_response(400, f"unknown fields: {', '.join(sorted(set(body) - writable))}")
        lb.update(body)
        lb["modified_on"] = stamp()
        self._snapshot()
        return web.json_response(envelope(lb))

    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        events = self.events
        if "since" in q:
            since = _parse_time(q["since"])
            events = [e for e in events if _parse_time(e["timestamp"]) >= since]
        if "until" in q:
            until = _parse_time(q["until"])
            events = [e for e in events if _parse_time(e["timestamp"]) <= until]
        if "pool_id" in q:
            events = [e for e in events if e["pool"]["id"] == q["pool_id"]]
        if "pool_name" in q:
            events = [e for e in events if e["pool"]["name"] == q["pool_name"]]
        if "pool_healthy" in q:
            want = q["pool_healthy"] == "true"
            events = [e for e in events if e["pool"]["healthy"] is want]
        return self._page(events)

    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = str(body.get("kind", "none"))
        if kind == "none":
            self.faults.clear()
        elif kind in ("429", "500", "slow", "forbidden", "events_forbidden"):
            self.faults.append(
                Fault(
                    kind,
                    body.get("times"),
                    float(body.get("delay", 0)),
                    int(body.get("retry_after", 1)),
                    body.get("method"),
                )
            )
        else:
            return web.json_response(
                {
                    "error": f"unknown fault {kind!r} "
                    "(429, 500, slow, forbidden, events_forbidden, none)"
                },
                status=400,
            )
        return web.json_response({"faults": [f.kind for f in self.faults]})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pools": [self.pool_view(p) for p in self.pools],
                "load_balancer": self.lbs[self.lb_id],
            }
        )


def _failure_reason(reason: str) -> str:
    # Cloudflare's wording for the common cases; the probe's own reason otherwise.
    if reason.startswith("HTTP "):
        return f"HTTP status code {reason.split()[1].rstrip(':')} does not match expected codes"
    if reason.startswith("timeout"):
        return "TCP connection timed out"
    if reason == "connection refused":
        return "TCP connection failed"
    if reason.startswith("body lacks") or reason.startswith("bad JSON"):
        return "Response body does not contain expected string"
    return reason


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
