"""A Cloudflare stand-in: the load-balancing API the bot uses, its own monitor, faults on demand.

State is kept as the JSON Cloudflare returns, so a PATCH is seen by the next GET. The monitor is
written here from Cloudflare's documentation, sharing no code with the bot's prober: it checks
every enabled origin of every enabled pool as Cloudflare's health monitor does, and pool and
origin ``healthy``, the pool health per location and the health events follow from it. What the
edge applies (configuration and health alike) reaches the data plane (``DataPlane``) after a
propagation delay. ``/_sandbox/faults`` turns on 429s, 500s, slow answers or a token without
permission. Each token's calls are counted against Cloudflare's API limit (``RateLimiter``):
every answer carries ``Ratelimit`` and ``Ratelimit-Policy``, and going over blocks the token with
429s and ``Retry-After``; ``/_sandbox/ratelimit`` reads the count or sets a smaller limit.

Pages modelled (under developers.cloudflare.com/load-balancing/):
- monitors/ and partials on monitor settings: retries only after a timeout, case-insensitive
  expected body, Cloudflare's own User-Agent, Host header prioritisation;
- understand-basics/health-details/: consecutive_up/down, unknown health counts as down,
  pool health from minimum_origins, no monitor means health is not considered;
- troubleshooting/common-error-codes/: the failure reasons' wording.

And fundamentals/api/reference/limits/ (the API's rate limit and its headers).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bot.fleet import GEO_REGIONS, Fleet
from bot.sandbox.alerting import Alerting, HealthChange
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

# load-balancing/monitors/ ("Important notes"): the monitor's User-Agent, with the first 16
# characters of the pool's id; the monitor's `header` cannot override it (API: monitor header).
USER_AGENT = (
    "Mozilla/5.0 (compatible; Cloudflare-Traffic-Manager/1.0; "
    "+https://www.cloudflare.com/traffic-manager/; pool-id: {pool_id})"
)
# troubleshooting/common-error-codes/: "we only read the first 10 KB of the response" (another
# page says 100 MB); the stricter figure is the conservative one.
BODY_LIMIT = 10 * 1024

# Failure reasons as health events and pool health word them (troubleshooting/common-error-codes/).
NO_FAILURES = "No failures"
TCP_FAILED = "TCP connection failed"
HTTP_TIMEOUT = "HTTP timeout occurred"
CODE_MISMATCH = "Response code mismatch error"
BODY_MISMATCH = "Response body mismatch error"
CONNECTION_RESET = "Connection Reset by Peer"
INVALID_RESPONSE = "HTTP Invalid Response"
OTHER_FAILURE = "Other Failure"

# The API's steering_policy enum (OpenAPI: load-balancing_steering_policy); '""' is how the
# description spells the empty policy.
STEERING_POLICIES = frozenset(
    {
        "off",
        "geo",
        "random",
        "dynamic_latency",
        "proximity",
        "least_outstanding_requests",
        "least_connections",
        "",
        '""',
    }
)
# What a PATCH of a load balancer may carry (OpenAPI: PATCH /zones/{zone_id}/load_balancers/{id}).
LB_WRITABLE = frozenset(
    {
        "adaptive_routing",
        "country_pools",
        "default_pools",
        "description",
        "enabled",
        "fallback_pool",
        "location_strategy",
        "name",
        "pop_pools",
        "proxied",
        "random_steering",
        "region_pools",
        "rules",
        "session_affinity",
        "session_affinity_attributes",
        "session_affinity_ttl",
        "steering_policy",
        "ttl",
    }
)
POOL_WRITABLE = frozenset(
    {
        "enabled",
        "origins",
        "minimum_origins",
        "description",
        "name",
        "monitor",
        "notification_email",
        "check_regions",
        "latitude",
        "longitude",
        "origin_steering",
        "load_shedding",
        "notification_filter",
    }
)
ORIGIN_WRITABLE = frozenset(
    {"name", "address", "enabled", "weight", "header", "virtual_network_id", "port"}
)


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


def origin_url(origin: Mapping[str, Any]) -> str:
    """Where an origin answers: sandbox origin addresses are ``host:port`` on loopback."""
    address = str(origin["address"])
    return address if "://" in address else f"http://{address}"


def origin_host_override(origin: Mapping[str, Any]) -> str | None:
    """An origin's own Host header (additional-options/override-http-host-headers/)."""
    values = (origin.get("header") or {}).get("Host") or []
    return str(values[0]) if values else None


def pool_health(pool: Mapping[str, Any], origins: Mapping[str, bool | None]) -> bool | None:
    """A pool's health from its enabled origins' health (None: unknown), as Cloudflare sees it.

    understand-basics/health-details/: a pool is unhealthy when fewer than ``minimum_origins``
    endpoints are healthy; its health is unknown while no monitor is attached or the monitor
    has not yet decided; disabled pools are not health-checked, so theirs is unknown too.
    """
    if not pool.get("enabled", True) or not pool.get("monitor"):
        return None
    enabled = [o["name"] for o in pool.get("origins") or () if o.get("enabled", True)]
    up = sum(1 for name in enabled if origins.get(name) is True)
    unknown = sum(1 for name in enabled if origins.get(name) is None)
    needed = int(pool.get("minimum_origins", 1))
    if up >= needed:
        return True
    if up + unknown < needed:
        return False
    return None  # the unknown origins decide


# --------------------------------------------------------------------------- the health check


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    failure_reason: str
    response_code: int | None  # None: no HTTP answer
    rtt: float  # seconds, over every attempt
    attempts: int


def codes_match(expected: str, status: int) -> bool:
    """``expected_codes``: "200", "2xx" or a comma list of both (monitor-settings-advanced)."""
    for token in (t.strip().lower() for t in expected.split(",")):
        if token.endswith("xx") and token[:1].isdigit() and status // 100 == int(token[0]):
            return True
        if token.isdigit() and status == int(token):
            return True
    return False


def monitor_headers(
    monitor: Mapping[str, Any], origin: Mapping[str, Any], pool_id: str
) -> CIMultiDict[str]:
    """The monitor's request headers: its `header`, the origin's Host first, Cloudflare's agent."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, values in (monitor.get("header") or {}).items():
        if name.lower() == "user-agent":
            continue  # "The User-Agent header cannot be overridden" (API: monitor header)
        for value in values if isinstance(values, list) else [values]:
            headers.add(name, str(value))
    # monitors/ "Host header prioritization": the endpoint's Host wins over the monitor's.
    host = origin_host_override(origin)
    if host is not None:
        headers["Host"] = host
    headers["User-Agent"] = USER_AGENT.format(pool_id=pool_id[:16])
    return headers


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    while len(data) < limit:
        chunk = await response.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    monitor: Mapping[str, Any],
    headers: CIMultiDict[str],
) -> tuple[bool, str, int | None]:
    """One request of a health check: (healthy, failure reason, status). Timeouts raise."""
    try:
        async with session.request(
            str(monitor.get("method") or "GET"),
            url,
            headers=headers,
            allow_redirects=bool(monitor.get("follow_redirects", False)),
            timeout=aiohttp.ClientTimeout(total=float(monitor.get("timeout") or 5)),
        ) as response:
            if not codes_match(str(monitor.get("expected_codes") or "200"), response.status):
                return False, CODE_MISMATCH, response.status
            expected = str(monitor.get("expected_body") or "")
            if expected:
                body = await _read_prefix(response, BODY_LIMIT)
                # API: expected_body is "a case-insensitive sub-string".
                if expected.lower() not in body.decode("utf-8", "replace").lower():
                    return False, BODY_MISMATCH, response.status
            return True, NO_FAILURES, response.status
    except aiohttp.ClientConnectorError:
        return False, TCP_FAILED, None  # refused or unreachable: not a timeout, no retry
    except aiohttp.ServerDisconnectedError:
        return False, CONNECTION_RESET, None
    except aiohttp.ClientResponseError:
        return False, INVALID_RESPONSE, None
    except aiohttp.ClientOSError:
        return False, CONNECTION_RESET, None


async def health_check(
    session: aiohttp.ClientSession,
    url: str,
    monitor: Mapping[str, Any],
    headers: CIMultiDict[str],
) -> CheckResult:
    """A health check with the monitor's retries, which follow a TIMEOUT only.

    API (load-balancing_retries): "The number of retries to attempt in case of a timeout before
    marking the origin as unhealthy. Retries are attempted immediately." A refused connection or
    a wrong answer is final at once.
    """
    attempts = 1 + max(0, int(monitor.get("retries") or 0))
    started = time.perf_counter()
    reason = HTTP_TIMEOUT
    for attempt in range(1, attempts + 1):
        try:
            healthy, why, code = await _attempt(session, url, monitor, headers)
        except aiohttp.ConnectionTimeoutError:
            reason = TCP_FAILED  # no TCP connection within the timeout
            continue
        except (TimeoutError, aiohttp.ServerTimeoutError):
            reason = HTTP_TIMEOUT
            continue
        except aiohttp.ClientError:
            healthy, why, code = False, OTHER_FAILURE, None
        return CheckResult(healthy, why, code, time.perf_counter() - started, attempt)
    return CheckResult(False, reason, None, time.perf_counter() - started, attempts)


# --------------------------------------------------------------------------- the API's limit


@dataclass
class _Window:
    started: float
    calls: int = 0


class RateLimiter:
    """Cloudflare's API limit per token (fundamentals/api/reference/limits/).

    Documented: 1,200 requests per 5 minutes per user, whatever the route; going over blocks
    every call for the next 5 minutes with a 429; the ``Ratelimit`` header gives the remaining
    quota ``r`` and the seconds until the window resets ``t`` (``"default";r=50;t=30``),
    ``Ratelimit-Policy`` the quota ``q`` and its window ``w``, and a 429 ``Retry-After`` (seconds,
    rounded up). Not documented: whether the window is fixed or sliding (fixed windows here,
    each from the token's first call after the last one ended), whether calls made while blocked
    count (they do not here), and whether the block ends the window (it does here: the count
    starts again when the block is over).
    """

    def __init__(
        self,
        limit: int = 1200,
        window: float = 300.0,
        block: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.clock = clock
        self.windows: dict[str, _Window] = {}
        self.blocked: dict[str, float] = {}  # token -> until
        self.calls: dict[str, int] = {}  # every call ever counted, by token

    def configure(self, limit: int, window: float, block: float) -> None:
        self.limit, self.window, self.block = limit, window, block
        self.windows.clear()
        self.blocked.clear()

    def _window(self, token: str, now: float) -> _Window:
        current = self.windows.get(token)
        if current is None or now - current.started >= self.window:
            current = self.windows[token] = _Window(now)
        return current

    def spend(self, token: str) -> float | None:
        """Count one call; the seconds it is blocked for (a 429), or None when it may go."""
        now = self.clock()
        until = self.blocked.get(token)
        if until is not None:
            if now < until:
                return until - now
            del self.blocked[token]
            self.windows.pop(token, None)
        current = self._window(token, now)
        if current.calls >= self.limit:
            self.blocked[token] = now + self.block
            return self.block
        current.calls += 1
        self.calls[token] = self.calls.get(token, 0) + 1
        return None

    def headers(self, token: str, retry_after: float | None = None) -> dict[str, str]:
        now = self.clock()
        current = self._window(token, now)
        if retry_after is not None:
            remaining, reset = 0, retry_after
        else:
            remaining = max(0, self.limit - current.calls)
            reset = current.started + self.window - now
        out = {
            "Ratelimit": f'"default";r={remaining};t={max(0, math.ceil(reset))}',
            "Ratelimit-Policy": f'"default";q={self.limit};w={self.window:g}',
        }
        if retry_after is not None:
            out["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return out

    def state(self, token: str) -> dict[str, Any]:
        now = self.clock()
        current = self.windows.get(token)
        until = self.blocked.get(token)
        return {
            "limit": self.limit,
            "window": self.window,
            "block": self.block,
            "calls": self.calls.get(token, 0),
            "in_window": current.calls if current else 0,
            "blocked_for": max(0.0, until - now) if until is not None else 0.0,
        }


# --------------------------------------------------------------------------- state


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
    """One origin's health as the monitor decided it; ``healthy`` None means unknown."""

    healthy: bool | None = None
    failure_reason: str = NO_FAILURES
    response_code: int | None = None
    rtt: str = "0.0ms"
    streak: int = 0  # consecutive checks disagreeing with ``healthy``
    epoch: int = 0  # bumped on reset: a check started before it no longer counts

    def reset(self) -> None:
        """Unknown until the next check (a pool or origin (re-)enabled, re-addressed...)."""
        self.healthy, self.streak, self.response_code = None, 0, None
        self.failure_reason, self.rtt = NO_FAILURES, "0.0ms"
        self.epoch += 1

    def record(self, result: CheckResult, consecutive_down: int, consecutive_up: int) -> None:
        self.response_code = result.response_code
        self.rtt = f"{result.rtt * 1000:.1f}ms"
        if self.healthy is None:
            self.healthy, self.streak = result.healthy, 0  # unknown takes the first result
        elif result.healthy == self.healthy:
            self.streak = 0
        else:
            # health-details: consecutive_down / consecutive_up results change it (0 means 1).
            needed = max(1, consecutive_down if self.healthy else consecutive_up)
            self.streak += 1
            if self.streak >= needed:
                self.healthy, self.streak = result.healthy, 0
        if result.healthy == self.healthy:
            # The reason shown explains the health shown: a failure not yet confirmed by
            # consecutive_down does not make a healthy origin read as failing.
            self.failure_reason = result.failure_reason


@dataclass(frozen=True)
class EdgeState:
    """What the edge applies from ``effective_at`` on: configuration and health together."""

    effective_at: float
    lb: dict[str, Any]
    pools: dict[str, dict[str, Any]]
    health: dict[str, dict[str, bool | None]]  # pool id -> origin name -> healthy (None unknown)


@dataclass(frozen=True)
class Target:
    pool_id: str
    origin: dict[str, Any]
    monitor: dict[str, Any]
    epoch: int

    @property
    def key(self) -> tuple[str, str]:
        return self.pool_id, str(self.origin["name"])


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
        monitor_header: dict[str, list[str]] | None = None,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        self.token = token
        self.rate_limit = rate_limit or RateLimiter()
        self.account_id = cf_id("account", fleet.load_balancer.name)
        self.zone_id = cf_id("zone", fleet.load_balancer.hostname)
        self.propagation = propagation
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        # Every API exchange, for checking both sides against Cloudflare's OpenAPI description.
        self.exchanges: list[Exchange] = []
        self.events: list[dict[str, Any]] = []
        self._event_ids = itertools.count(1)
        self.origin_urls = origin_urls  # origin name -> URL, as seeded
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
                "header": copy.deepcopy(monitor_header or {}),
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
                # The load balancer ran long before the sandbox started: every origin is known.
                self.health[(pool_id, o.name)] = OriginHealth(
                    healthy=True if o.enabled else None, response_code=200 if o.enabled else None
                )
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
                "rules": [],
            }
        }
        # What the data plane sees, newest last; each entry applies from its effective_at.
        self._edge: list[EdgeState] = []
        self._snapshot(delay=0.0)
        self._monitor_task: asyncio.Task[None] | None = None
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # Notifications (webhook destinations, policies, dispatch): bot/sandbox/alerting.py.
        self.alerting = Alerting(self.account_id)
        self.server = LocalServer(self._build_app(), port)

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        base = "/client/v4"
        account = base + "/accounts/{account}/load_balancers"
        app.router.add_get(account + "/pools", self._list_pools)
        app.router.add_get(account + "/pools/{pool}", self._get_pool)
        app.router.add_patch(account + "/pools/{pool}", self._patch_pool)
        app.router.add_get(account + "/pools/{pool}/health", self._pool_health)
        app.router.add_get(account + "/monitors", self._list_monitors)
        app.router.add_get(account + "/monitors/{monitor}", self._get_monitor)
        app.router.add_get(base + "/zones/{zone}/load_balancers", self._list_lbs)
        app.router.add_get(base + "/zones/{zone}/load_balancers/{lb}", self._get_lb)
        app.router.add_patch(base + "/zones/{zone}/load_balancers/{lb}", self._patch_lb)
        app.router.add_get(base + "/user/load_balancing_analytics/events", self._events)
        # api/resources/user/subresources/tokens/methods/verify/: the stand-in's token is a user
        # token; an account-owned one is verified under its account.
        app.router.add_get(base + "/user/tokens/verify", self._verify_token)
        app.router.add_get(base + "/accounts/{account}/tokens/verify", self._verify_token)
        self.alerting.routes(app, base)
        app.router.add_post("/_sandbox/faults", self._set_faults)
        app.router.add_get("/_sandbox/state", self._state)
        app.router.add_get("/_sandbox/ratelimit", self._get_ratelimit)
        app.router.add_post("/_sandbox/ratelimit", self._set_ratelimit)
        return app

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/client/v4"

    async def start(self) -> None:
        await self.server.start()
        # A new connection for every check, as a monitor in another data center would open.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self._monitor_task = asyncio.create_task(self._monitor_loop())

    async def close(self) -> None:
        tasks = [t for t in (self._monitor_task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.alerting.close()
        if self._session is not None:
            await self._session.close()
        await self.server.close()

    # ----------------------------------------------------------------- health

    def origin_health(self, pool_id: str) -> dict[str, bool | None]:
        pool = self.pools[pool_id]
        return {
            o["name"]: self.health[(pool_id, o["name"])].healthy
            for o in pool["origins"]
            if (pool_id, o["name"]) in self.health
        }

    def pool_health(self, pool_id: str) -> bool | None:
        """True / False, or None while unknown (disabled, no monitor, or not yet checked)."""
        return pool_health(self.pools[pool_id], self.origin_health(pool_id))

    def pool_healthy(self, pool_id: str) -> bool:
        """Whether the monitor holds the pool healthy now; unknown counts as unhealthy."""
        return self.pool_health(pool_id) is True

    def _monitor_of(self, pool: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.monitors.get(str(pool.get("monitor") or ""))

    def _targets(self) -> Iterator[Target]:
        """Enabled origins of enabled pools with a monitor (weight 0 included: still checked)."""
        for pool_id, pool in self.pools.items():
            monitor = self._monitor_of(pool)
            if not pool.get("enabled", True) or monitor is None:
                continue  # health-details: disabled pools are not health-checked
            for origin in pool["origins"]:
                health = self.health.get((pool_id, origin["name"]))
                if origin.get("enabled", True) and health is not None:
                    yield Target(pool_id, origin, monitor, health.epoch)

    async def _check(self, target: Target) -> CheckResult:
        assert self._session is not None, "start() the stand-in first"
        url = origin_url(target.origin) + str(target.monitor.get("path") or "/")
        headers = monitor_headers(target.monitor, target.origin, target.pool_id)
        return await health_check(self._session, url, target.monitor, headers)

    def _apply(self, target: Target, result: CheckResult) -> None:
        health = self.health.get(target.key)
        if health is None or health.epoch != target.epoch:
            return  # reset (disabled, re-enabled, removed) while the check ran
        pool_id = target.pool_id
        was_origin, was_pool = health.healthy, self.pool_health(pool_id)
        health.record(
            result,
            int(target.monitor.get("consecutive_down") or 0),
            int(target.monitor.get("consecutive_up") or 0),
        )
        now_pool = self.pool_health(pool_id)
        if health.healthy != was_origin or now_pool != was_pool:
            self._snapshot()
        # Events record a change of KNOWN health only (monitors/: "Health monitor requests that
        # result in a status change for an endpoint are recorded as events"). An origin that
        # was unknown (just enabled) and gets its first result has not changed status; not
        # recording it is the conservative reading: nothing may count on such an event.
        if was_origin is not None and health.healthy != was_origin:
            self._record_event(pool_id, target.key[1], was_pool is True)
            self._notify(target, health.healthy is True, health.failure_reason, None)
        if was_pool is not None and now_pool is not None and now_pool != was_pool:
            self._notify(target, now_pool, health.failure_reason, pool_id)

    def _notify(self, target: Target, healthy: bool, reason: str, pool: str | None) -> None:
        """Hand a change of known health to Notifications (``pool`` set: the pool's own)."""
        origin = target.origin
        self.alerting.health_changed(
            HealthChange(
                time.time(),
                target.pool_id,
                str(self.pools[target.pool_id]["name"]),
                None if pool is not None else str(origin["name"]),
                None if pool is not None else str(origin["address"]),
                healthy,
                reason,
            )
        )

    async def check_now(self) -> None:
        """One round of the monitor over every enabled origin of every enabled pool."""
        targets = list(self._targets())
        results = await asyncio.gather(*(self._check(t) for t in targets))
        for target, result in zip(targets, results, strict=True):
            self._apply(target, result)

    async def _check_one(self, target: Target) -> None:
        try:
            self._apply(target, await self._check(target))
        finally:
            self._inflight.pop(target.key, None)

    def _interval(self) -> float:
        used = [self._monitor_of(p) for p in self.pools.values()]
        return float(min((m["interval"] for m in used if m is not None), default=60))

    async def _monitor_loop(self) -> None:
        # Each origin on its own: a slow origin's retries do not hold back the others' checks.
        while True:
            await asyncio.sleep(self._interval())
            for target in self._targets():
                if target.key not in self._inflight:
                    self._inflight[target.key] = asyncio.create_task(self._check_one(target))

    def _record_event(self, pool_id: str, changed_origin: str, pool_was_healthy: bool) -> None:
        pool = self.pools[pool_id]
        healthy = self.pool_healthy(pool_id)
        origins = []
        for o in pool["origins"]:
            entry: dict[str, Any] = {
                "name": o["name"],
                "address": o["address"],
                "ip": o["address"].split(":")[0],
                "enabled": o.get("enabled", True),
                "changed": o["name"] == changed_origin,
            }
            h = self.health.get((pool_id, o["name"]))
            if h is not None and h.healthy is not None:
                entry["healthy"] = h.healthy
                entry["failure_reason"] = h.failure_reason
            origins.append(entry)
        self.events.append(
            {
                "id": next(self._event_ids),
                "timestamp": stamp(),
                "pool": {
                    "id": pool_id,
                    "name": pool["name"],
                    "healthy": healthy,
                    "changed": healthy != pool_was_healthy,
                    "minimum_origins": pool["minimum_origins"],
                },
                "origins": origins,
            }
        )

    # ----------------------------------------------------------------- what the edge sees

    def _snapshot(self, delay: float | None = None) -> None:
        now = time.monotonic()
        health = {pid: self.origin_health(pid) for pid in self.pools}
        self._edge.append(
            EdgeState(
                now + (self.propagation if delay is None else delay),
                copy.deepcopy(self.lbs[self.lb_id]),
                copy.deepcopy(self.pools),
                health,
            )
        )
        # Keep the newest entry in effect and those still propagating; older ones never apply.
        in_effect = [i for i, s in enumerate(self._edge) if s.effective_at <= now]
        if in_effect:
            del self._edge[: in_effect[-1]]

    def edge_state(self) -> EdgeState:
        """What the edge applies now: the newest state past its propagation delay."""
        now = time.monotonic()
        current = self._edge[0]
        for state in self._edge:
            if state.effective_at <= now:
                current = state
        return current

    def effective_config(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The configuration the edge applies now (load balancer, pools)."""
        state = self.edge_state()
        return state.lb, state.pools

    # ----------------------------------------------------------------- views

    def pool_view(self, pool_id: str) -> dict[str, Any]:
        """A pool as the API returns it; ``healthy`` (and origins' ``failure_reason``) only
        where health is known: Cloudflare guarantees no value while it is unknown."""
        pool = copy.deepcopy(self.pools[pool_id])
        known = self.pool_health(pool_id)
        if known is not None:
            pool["healthy"] = known
        for o in pool["origins"]:
            h = self.health.get((pool_id, o["name"]))
            if h is not None and h.healthy is not None:
                o["healthy"] = h.healthy
                o["failure_reason"] = h.failure_reason
        return pool

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
        blocked = self.rate_limit.spend(self.token)
        if blocked is not None:
            return error_response(429, headers=self.rate_limit.headers(self.token, blocked))
        response = await self._served(request, handler)
        limits = self.rate_limit.headers(self.token)
        if "Retry-After" in response.headers:
            # A 429 fault: nothing left until its Retry-After, which stays as the fault set it.
            wait = float(response.headers["Retry-After"])
            limits = self.rate_limit.headers(self.token, wait)
            limits["Retry-After"] = response.headers["Retry-After"]
        response.headers.update(limits)
        return response

    async def _served(self, request: web.Request, handler: Any) -> web.StreamResponse:
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

    def _pool_patch_error(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        unknown = set(body) - POOL_WRITABLE
        if unknown:
            return f"unknown fields: {', '.join(sorted(unknown))}"
        if body.get("monitor") and body["monitor"] not in self.monitors:
            return f"monitor {body['monitor']} does not exist"
        origins = body.get("origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, dict) for o in origins):
            return "origins must be a list of objects"
        for o in origins:
            extra = set(o) - ORIGIN_WRITABLE
            if extra:
                return f"origin fields are read-only: {', '.join(sorted(extra))}"
            if not o.get("name") or not o.get("address"):
                return "every origin needs a name and an address"
            if not 0 <= float(o.get("weight", 1)) <= 1:
                return f"origin {o['name']}: weight must be between 0 and 1"
        names = [o["name"] for o in origins]
        if len(names) != len(set(names)):
            return "origin names must be unique within a pool"
        return None

    def _reset_changed_health(
        self, pool_id: str, before: Mapping[str, Any], after: Mapping[str, Any]
    ) -> None:
        """Health becomes unknown where the monitor has not seen the new state yet.

        health-details: "Origins are considered down when monitoring is enabled, but the health
        status is still unknown" (e.g. just re-enabled); a disabled pool or origin is not
        checked, so its health is unknown as well.
        """
        whole = before.get("enabled", True) != after.get("enabled", True) or before.get(
            "monitor"
        ) != after.get("monitor")
        old = {o["name"]: o for o in before["origins"]}
        for o in after["origins"]:
            prev = old.get(o["name"])
            health = self.health.setdefault((pool_id, o["name"]), OriginHealth())
            if (
                whole
                or prev is None
                or prev.get("enabled", True) != o.get("enabled", True)
                or prev.get("address") != o.get("address")
            ):
                health.reset()
        for name in set(old) - {o["name"] for o in after["origins"]}:
            self.health.pop((pool_id, name), None)

    async def _patch_pool(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool"]
        if pool_id not in self.pools:
            return error_response(404, "pool not found")
        body = await request.json()
        problem = self._pool_patch_error(body)
        if problem is not None:
            return error_response(400, problem)
        pool = self.pools[pool_id]
        before = copy.deepcopy(pool)
        pool.update(copy.deepcopy(body))
        pool["modified_on"] = stamp()
        if "enabled" in body and body["enabled"] != before.get("enabled", True):
            # API (disabled_at): "This field shows up only if the pool is disabled."
            if body["enabled"]:
                pool.pop("disabled_at", None)
            else:
                pool["disabled_at"] = stamp()
        self._reset_changed_health(pool_id, before, pool)
        self._snapshot()
        return web.json_response(envelope(self.pool_view(pool_id)))

    async def _pool_health(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool"]
        if pool_id not in self.pools:
            return error_response(404, "pool not found")
        origins = []
        for o in self.pools[pool_id]["origins"]:
            h = self.health.get((pool_id, o["name"]))
            if not o.get("enabled", True) or h is None or h.healthy is None:
                continue  # unknown health: no entry rather than a guess
            check: dict[str, Any] = {
                "healthy": h.healthy,
                "rtt": h.rtt,
                "failure_reason": h.failure_reason,
            }
            if h.response_code is not None:
                check["response_code"] = h.response_code
            origins.append({o["address"]: check})
        known = self.pool_health(pool_id)
        location: dict[str, Any] = {"origins": origins}
        if known is not None:
            location["healthy"] = known
        pop_health = {loc: copy.deepcopy(location) for loc in LOCATIONS}
        return web.json_response(envelope({"pool_id": pool_id, "pop_health": pop_health}))

    async def _list_monitors(self, request: web.Request) -> web.Response:
        return self._page(list(self.monitors.values()))

    async def _get_monitor(self, request: web.Request) -> web.Response:
        monitor = self.monitors.get(request.match_info["monitor"])
        if monitor is None:
            return error_response(404, "monitor not found")
        return web.json_response(envelope(monitor))

    async def _verify_token(self, request: web.Request) -> web.Response:
        # Only a valid token gets this far (the gate answers 401 otherwise): it is active.
        result = {"id": cf_id("token", self.token), "status": "active"}
        return web.json_response(envelope(result))

    async def _list_lbs(self, request: web.Request) -> web.Response:
        return self._page(list(self.lbs.values()))

    async def _get_lb(self, request: web.Request) -> web.Response:
        lb = self.lbs.get(request.match_info["lb"])
        if lb is None:
            return error_response(404, "load balancer not found")
        return web.json_response(envelope(lb))

    def _pool_refs_error(self, body: Mapping[str, Any]) -> str | None:
        """Pool ids the load balancer names must exist, as Cloudflare validates them."""
        lists: list[Any] = []
        if "default_pools" in body:
            lists.append(body["default_pools"])
        for key in ("region_pools", "country_pools", "pop_pools"):
            mapping = body.get(key) or {}
            if not isinstance(mapping, dict):
                return f"{key} must be an object"
            lists.extend(mapping.values())
        if "region_pools" in body:
            unknown = set(body["region_pools"] or {}) - set(GEO_REGIONS)
            if unknown:
                return f"unknown regions in region_pools: {', '.join(sorted(unknown))}"
        for ids in lists:
            if not isinstance(ids, list):
                return "pool lists must be arrays of pool ids"
            missing = [i for i in ids if i not in self.pools]
            if missing:
                return f"pool {missing[0]} does not exist"
        fallback = body.get("fallback_pool")
        if fallback is not None and fallback not in self.pools:
            return f"fallback pool {fallback} does not exist"
        return None

    @staticmethod
    def _rules_error(rules: Any, steering: str) -> str | None:
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            return "rules must be a list of objects"
        live = [r for r in rules if not r.get("disabled")]
        if any(str(r.get("condition") or "").strip() for r in live):
            # The sandbox cannot evaluate Cloudflare's rule expressions (load-balancing-rules/
            # expressions/); refusing is safer than routing as if a condition were false.
            return "the sandbox evaluates only rules with an empty condition (always true)"
        if live and steering == "geo":
            # geo-steering/: "Custom load balancing rules are incompatible with Geo steering"
            # and "will not function as expected"; the sandbox does not guess how.
            return "custom rules are incompatible with geo steering"
        return None

    async def _patch_lb(self, request: web.Request) -> web.Response:
        lb = self.lbs.get(request.match_info["lb"])
        if lb is None:
            return error_response(404, "load balancer not found")
        body = await request.json()
        if not isinstance(body, dict):
            return error_response(400, "the body must be a JSON object")
        if set(body) - LB_WRITABLE:
            return error_response(
                400, f"unknown fields: {', '.join(sorted(set(body) - LB_WRITABLE))}"
            )
        if str(body.get("steering_policy", "")) not in STEERING_POLICIES:
            return error_response(400, f"unknown steering_policy {body['steering_policy']!r}")
        merged = {**lb, **body}
        problem = self._pool_refs_error(body) or self._rules_error(
            merged.get("rules") or [], effective_steering(merged)
        )
        if problem is not None:
            return error_response(400, problem)
        lb.update(copy.deepcopy(body))
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

    async def _get_ratelimit(self, request: web.Request) -> web.Response:
        return web.json_response(self.rate_limit.state(self.token))

    async def _set_ratelimit(self, request: web.Request) -> web.Response:
        """``{"limit": 30, "window": 10, "block": 5}``: a smaller budget, counted from now."""
        body = await request.json()
        try:
            limit = int(body.get("limit", 1200))
            window = float(body.get("window", 300))
            block = float(body.get("block", window))
        except (TypeError, ValueError):
            return web.json_response({"error": "limit, window and block are numbers"}, status=400)
        if limit < 1 or window <= 0 or block < 0:
            return web.json_response(
                {"error": "limit >= 1, window > 0 and block >= 0 are needed"}, status=400
            )
        self.rate_limit.configure(limit, window, block)
        return web.json_response(self.rate_limit.state(self.token))

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pools": [self.pool_view(p) for p in self.pools],
                "load_balancer": self.lbs[self.lb_id],
            }
        )


def effective_steering(lb: Mapping[str, Any]) -> str:
    """The steering policy in force; the empty one resolves as the API describes it.

    API (load-balancing_steering_policy): '""' "will map to "geo" if you use
    region_pools/country_pools/pop_pools otherwise "off"".
    """
    policy = str(lb.get("steering_policy") or "")
    if policy in ("", '""'):
        mapped = any(lb.get(k) for k in ("region_pools", "country_pools", "pop_pools"))
        return "geo" if mapped else "off"
    return policy


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
