"""The public hostname's data plane: each request routed by Cloudflare's rules for its geo region.

The geo region is read from a request header (``X-Geo-Region``, as the sandbox's relays send it);
requests without one come from ``default_geo``. The configuration it applies is the Cloudflare
stand-in's after the propagation delay; pool health is its monitor's, as on the real edge.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import httpx
from aiohttp import web

from bot.fleet import GEO_REGIONS
from bot.loadbalancer.convert import lb_from_json, pool_from_json
from bot.routing import Via, route
from bot.sandbox.cloudflare import CloudflareStandIn
from bot.sandbox.servers import LocalServer

GEO_HEADER = "X-Geo-Region"
RETRY_AFTER = "30"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class DataPlane:
    def __init__(
        self, cf: CloudflareStandIn, default_geo: str = "ENAM", port: int | None = None
    ) -> None:
        self.cf = cf
        self.default_geo = default_geo
        self.served: list[tuple[str, str | None, int]] = []  # geo, pool name, status
        self.http = httpx.AsyncClient(timeout=5.0)
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

    def choose(self, geo: str) -> tuple[str | None, str | None, Via]:
        """(pool id, origin name, how chosen) for a request from ``geo``, as the edge sees it."""
        lb_json, pools_json = self.cf.effective_config()
        pools = {}
        for pool_id, raw in pools_json.items():
            pool = pool_from_json(raw)
            # Enabled flags are the propagated configuration; health is the monitor's, live.
            healthy = self.cf.pool_healthy(pool_id) if pool_id in self.cf.pools else False
            pools[pool_id] = replace(pool, healthy=healthy)
        chosen = route(geo, lb_from_json(lb_json), pools)
        if chosen.pool_id is None or chosen.pool_id not in pools_json:
            return None, None, chosen.via
        origins = [o for o in pools_json[chosen.pool_id]["origins"] if o["enabled"]]
        live = [o for o in origins if self.cf.health[(chosen.pool_id, o["name"])].healthy]
        origin = (live or origins or [None])[0]
        return chosen.pool_id, origin["name"] if origin else None, chosen.via

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
        pool_id, origin, via = self.choose(geo)
        pool_name = self.cf.pools[pool_id]["name"] if pool_id in self.cf.pools else None
        ray = {"cf-ray": f"{secrets.token_hex(8)}-SBX"}
        if origin is None:
            self.served.append((geo, pool_name, 503))
            return web.json_response(
                {"error": "no origin available"},
                status=503,
                headers=ray | {"Retry-After": RETRY_AFTER},
            )
        try:
            upstream = await self.http.request(
                request.method,
                self.cf.origin_urls[origin] + request.path_qs,
                content=await request.read(),
                headers={"Host": request.host},
            )
        except httpx.HTTPError:
            self.served.append((geo, pool_name, 503))
            return web.json_response(
                {"error": "origin unreachable", "pool": pool_name},
                status=503,
                headers=ray | {"Retry-After": RETRY_AFTER},
            )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP} | ray
        if via is Via.FALLBACK and upstream.status_code >= 500:
            headers.setdefault("Retry-After", RETRY_AFTER)
        self.served.append((geo, pool_name, upstream.status_code))
        return web.Response(status=upstream.status_code, body=upstream.content, headers=headers)
