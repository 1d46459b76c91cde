"""The public hostname's data plane: each request routed as Cloudflare's edge would route it.

The geo region comes from a request header (``X-Geo-Region``, as the sandbox's relays send it;
``default_geo`` without one) and, optionally, the country from ``X-Geo-Country``. The edge data
center is the region's usual one (``COLOS``). What is applied, configuration and health alike,
is the Cloudflare stand-in's state after its propagation delay. The rules are written here from
Cloudflare's documentation and share no code with the bot's routing: this is the oracle the bot
is checked against.

Pages modelled (under developers.cloudflare.com/):
- load-balancing/understand-basics/traffic-steering/steering-policies/geo-steering/
  ("Failover behavior", pop > country > region pools), .../standard-options/ (off: failover);
- load-balancing/understand-basics/health-details/ (unknown health is down, fallback pool,
  530/1016 when the fallback is disabled), partials "fallback-pools" and origin weights;
- support/troubleshooting/http-status-codes/cloudflare-5xx-errors/ (520, 521, 522, 524).

Not modelled: session affinity (every request is steered afresh, as a client without the
``__cflb`` cookie), adaptive routing / zero-downtime failover (no retry on another origin),
random/dynamic/proximity steering (approximated by failover order, see ``pool_order``).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web
from multidict import CIMultiDict

from bot.fleet import GEO_REGIONS
from bot.sandbox.cloudflare import (
    CloudflareStandIn,
    EdgeState,
    effective_steering,
    origin_host_override,
    origin_url,
    pool_health,
)
from bot.sandbox.servers import LocalServer

GEO_HEADER = "X-Geo-Region"
COUNTRY_HEADER = "X-Geo-Country"
POOL_HEADER = "X-Sandbox-Pool"  # sandbox only: the pool the edge chose
COLO_HEADER = "X-Sandbox-Colo"  # sandbox only, to the origin: the edge data center used
# One usual Cloudflare data center (IATA code) per geo region: where its users enter the edge.
COLOS: dict[str, str] = {
    "WNAM": "SJC",
    "ENAM": "IAD",
    "NSAM": "BOG",
    "SSAM": "GRU",
    "WEU": "LHR",
    "EEU": "WAW",
    "ME": "DXB",
    "NAF": "CMN",
    "SAF": "JNB",
    "OC": "SYD",
    "SAS": "BOM",
    "SEAS": "SIN",
    "NEAS": "NRT",
}
# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes for the body it sends.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)
# support/troubleshooting/http-status-codes/cloudflare-5xx-errors/error-522/: no SYN+ACK within
# 15 s; .../error-524/: the origin connected but sent no answer within 100 s.
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 100.0
REASONS = {
    520: "Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    524: "A Timeout Occurred",
    530: "Origin DNS Error",
}


@dataclass(frozen=True)
class Steered:
    """The pool the edge sends a request to (None: none can serve), and whether as fallback."""

    pool_id: str | None
    fallback: bool = False


def apply_rules(lb: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
    """The load balancer after its custom rules' overrides, and a fixed response if one applies.

    API (load-balancing_rules): lower ``priority`` first (array order otherwise), a rule's
    overrides replace the load balancer's settings, a ``fixed_response`` answers directly and
    terminates, ``terminates`` stops evaluation. The stand-in accepts only empty conditions
    ("An empty condition is always true"), so every enabled rule applies.
    """
    effective = dict(lb)
    rules = [r for r in lb.get("rules") or () if not r.get("disabled")]
    ordered = sorted(enumerate(rules), key=lambda pair: (int(pair[1].get("priority", 0)), pair[0]))
    for _, rule in ordered:
        if rule.get("fixed_response"):
            return effective, rule["fixed_response"]
        effective.update(rule.get("overrides") or {})
        if rule.get("terminates"):
            break
    return effective, None


def pool_order(lb: Mapping[str, Any], geo: str, country: str | None, colo: str) -> list[str]:
    """The pools to try, in failover order, for a request from ``geo`` via ``colo``.

    geo-steering/: pop_pools fall back to country_pools, then region_pools, then default_pools;
    the first mapping that names the location is used. standard-options/: "off" uses
    default_pools in order. Random, dynamic latency, proximity and least-outstanding steering
    spread traffic by weights, latency or position the sandbox does not have: it approximates
    them by failover order over default_pools.
    """
    if effective_steering(lb) == "geo":
        for key, location in (
            ("pop_pools", colo),
            ("country_pools", country),
            ("region_pools", geo),
        ):
            listed = (lb.get(key) or {}).get(location) if location else None
            if listed:
                return [str(p) for p in listed]
    return [str(p) for p in lb.get("default_pools") or ()]


def is_candidate(pool: Mapping[str, Any] | None, health: Mapping[str, bool | None]) -> bool:
    """An enabled pool that the monitor holds healthy; a pool without monitor always is.

    health-details: "When no monitor is attached to a pool, the health status is not considered
    during steering"; "Origins are considered down when monitoring is enabled, but the health
    status is still unknown."
    """
    if pool is None or not pool.get("enabled", True):
        return False
    if not pool.get("monitor"):
        return True
    return pool_health(pool, health) is True


def steer(state: EdgeState, lb: Mapping[str, Any], geo: str, country: str | None) -> Steered:
    """The first candidate pool in order, else the fallback pool, whatever its health.

    geo-steering/ "Failover behavior": with one pool for the region and that pool unavailable,
    the fallback pool is used; with several, their order is respected. Partial "fallback-pools":
    the pool of last resort, "its health is not taken into account".
    """
    for pool_id in pool_order(lb, geo, country, COLOS[geo]):
        if is_candidate(state.pools.get(pool_id), state.health.get(pool_id, {})):
            return Steered(pool_id)
    fallback = lb.get("fallback_pool")
    pool = state.pools.get(str(fallback)) if fallback else None
    if pool is None or not pool.get("enabled", True):
        # health-details: a load balancer whose fallback pool is disabled answers 530 / 1016.
        return Steered(None, fallback=True)
    return Steered(str(fallback), fallback=True)


def pick_origin(
    pool: Mapping[str, Any], health: Mapping[str, bool | None], rng: random.Random
) -> dict[str, Any] | None:
    """An origin of the pool: weighted random over the healthy enabled ones with weight > 0.

    API (origins): traffic "is balanced across all currently healthy origins"; partial on origin
    weights: traffic share = weight / sum of weights, and weight 0 gets none. When none is
    healthy (the fallback pool, or a pool kept healthy by weight-0 origins) the sandbox sends
    to any enabled origin with weight > 0, its reading of the fallback's "health is not taken
    into account"; Cloudflare documents nothing finer.
    """
    usable = [
        o
        for o in pool.get("origins") or ()
        if o.get("enabled", True) and float(o.get("weight", 1)) > 0
    ]
    healthy = usable if not pool.get("monitor") else [o for o in usable if health.get(o["name"])]
    choices = healthy or usable
    if not choices:
        return None
    return dict(rng.choices(choices, weights=[float(o.get("weight", 1)) for o in choices])[0])


class DataPlane:
    def __init__(
        self,
        cf: CloudflareStandIn,
        default_geo: str = "ENAM",
        port: int | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.cf = cf
        self.default_geo = default_geo
        self.served: list[tuple[str, str | None, int]] = []  # geo, pool name, status
        self.rng = random.Random()
        # No pooled connections: an origin that went down refuses the next request (521),
        # rather than failing on a connection kept from before.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self.server = LocalServer(app, port)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
        await self.http.aclose()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        geo = request.headers.get(GEO_HEADER, self.default_geo).upper()
        if geo not in GEO_REGIONS:
            return web.json_response(
                {
                    "error": f"unknown geo region {geo!r} in {GEO_HEADER} "
                    f"(one of {', '.join(GEO_REGIONS)})"
                },
                status=400,
            )
        country = request.headers.get(COUNTRY_HEADER, "").strip().upper() or None
        colo = COLOS[geo]
        ray = f"{secrets.token_hex(8)}-{colo}"  # a Ray ID ends with the data center's code
        state = self.cf.edge_state()
        if not state.lb.get("enabled", True):
            # A disabled load balancer does not answer for the hostname; the sandbox assumes no
            # other DNS record stands behind it, hence Cloudflare's "Origin DNS error" (1016).
            return self._error(geo, None, 530, 1016, ray)
        lb, fixed = apply_rules(state.lb)
        if fixed is not None:
            return self._fixed(geo, fixed, ray)
        steered = steer(state, lb, geo, country)
        if steered.pool_id is None:
            return self._error(geo, None, 530, 1016, ray)
        pool = state.pools[steered.pool_id]
        origin = pick_origin(pool, state.health.get(steered.pool_id, {}), self.rng)
        if origin is None:
            return self._error(geo, str(pool["name"]), 530, 1016, ray)
        return await self._proxy(request, geo, country, str(pool["name"]), origin, ray)

    def _error(
        self, geo: str, pool_name: str | None, status: int, code: int, ray: str
    ) -> web.Response:
        """An error the edge makes itself: Cloudflare's plain-text form, ``error code: N``."""
        self.served.append((geo, pool_name, status))
        headers = {"cf-ray": ray, "Server": "cloudflare"}
        if pool_name is not None:
            headers[POOL_HEADER] = pool_name
        return web.Response(
            status=status,
            reason=REASONS.get(status),
            text=f"error code: {code}",
            headers=headers,
        )

    def _fixed(self, geo: str, fixed: Mapping[str, Any], ray: str) -> web.Response:
        status = int(fixed.get("status_code") or 200)
        self.served.append((geo, None, status))
        headers = {"cf-ray": ray, "Server": "cloudflare"}
        if fixed.get("location"):
            headers["Location"] = str(fixed["location"])
        return web.Response(
            status=status,
            text=str(fixed.get("message_body") or ""),
            content_type=str(fixed.get("content_type") or "text/plain"),
            headers=headers,
        )

    def _forwarded_headers(
        self, request: web.Request, country: str | None, origin: Mapping[str, Any], ray: str
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "host"
        )
        # The hostname as the user asked for it, unless the origin overrides Host
        # (load-balancing/additional-options/override-http-host-headers/).
        headers["Host"] = origin_host_override(origin) or request.host
        headers["CF-Ray"] = ray
        headers["CF-Connecting-IP"] = request.remote or "127.0.0.1"
        headers["X-Forwarded-Proto"] = request.scheme
        if country is not None:
            headers["CF-IPCountry"] = country
        headers[COLO_HEADER] = ray.rsplit("-", 1)[1]
        return headers

    async def _proxy(
        self,
        request: web.Request,
        geo: str,
        country: str | None,
        pool_name: str,
        origin: Mapping[str, Any],
        ray: str,
    ) -> web.Response:
        try:
            upstream = await self.http.request(
                request.method,
                origin_url(origin) + request.path_qs,
                content=await request.read(),
                headers=self._forwarded_headers(request, country, origin, ray),
            )
        except httpx.ConnectTimeout:
            return self._error(geo, pool_name, 522, 522, ray)
        except httpx.ConnectError:
            return self._error(geo, pool_name, 521, 521, ray)  # refused: web server is down
        except httpx.TimeoutException:
            return self._error(geo, pool_name, 524, 524, ray)  # connected, no answer in time
        except httpx.HTTPError:
            return self._error(geo, pool_name, 520, 520, ray)  # reset or empty answer
        # The origin's answer as it sent it: no invented Retry-After or rewritten status.
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in upstream.headers.multi_items() if k.lower() not in HOP_BY_HOP
        )
        headers["cf-ray"] = ray
        headers[POOL_HEADER] = pool_name
        self.served.append((geo, pool_name, upstream.status_code))
        return web.Response(
            status=upstream.status_code,
            reason=upstream.reason_phrase or None,
            body=upstream.content,
            headers=headers,
        )
