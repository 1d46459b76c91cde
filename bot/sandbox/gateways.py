"""Region gateways answering ``GET /health`` in the seed's compact JSON contract.

Each one is switchable at run time: healthy, degraded (a named check failing, 503), down
(connections refused), erroring (500), slow (answers after a delay), flapping (healthy and
degraded in turn), gray (healthy to Cloudflare's monitor only), and two malformed answers
(wrongbody, badjson) for the probe's edge cases.

As in the seed, the body's ``region`` is the EDGE data center (``cf.colo``): the same whichever
deployment answered. The deployment that answered is named in the ``X-Gateway-Region`` header.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from multidict import CIMultiDict

from bot.sandbox.servers import LocalServer

CHECKS = ("d1", "kv", "services")
MODES = (
    "healthy",
    "degraded",
    "down",
    "erroring",
    "slow",
    "flapping",
    "gray",
    "wrongbody",
    "badjson",
)
# Cloudflare's health monitor names itself so in its User-Agent (load-balancing/monitors/).
CLOUDFLARE_AGENT = "Cloudflare-Traffic-Manager"
COLO_HEADER = "X-Sandbox-Colo"  # the sandbox edge's data center, as cf.colo would give it
DIRECT_COLO = "IAD"  # cf.colo for a request that came through no sandbox edge
REGION_HEADER = "X-Gateway-Region"  # the deployment that answered


@dataclass
class GatewayMode:
    mode: str = "healthy"
    check: str = "d1"  # the failing check when degraded or flapping
    delay: float = 3.0  # seconds, when slow
    period: float = 2.0  # seconds per half-cycle, when flapping
    since: float = 0.0

    def describe(self) -> str:
        extra = {
            "degraded": f" ({self.check} error)",
            "flapping": f" (every {self.period:g} s, {self.check})",
            "slow": f" ({self.delay:g} s)",
        }.get(self.mode, "")
        return self.mode + extra


def health_body(colo: str, failing: str | None) -> tuple[int, str]:
    checks = {name: ("error" if name == failing else "ok") for name in CHECKS}
    healthy = failing is None
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {
        "timestamp": stamp,
        "status": "healthy" if healthy else "degraded",
        "region": colo,
        "checks": checks,
    }
    # The gateway's framework writes compact JSON; monitors match on that exact substring.
    return (200 if healthy else 503), json.dumps(body, separators=(",", ":"))


class Gateway:
    """One region's gateway origin on its own port."""

    def __init__(self, region: str, port: int | None = None) -> None:
        self.region = region
        self.state = GatewayMode()
        self.requests = 0
        # The latest /health request's headers, for tests of what the monitor sends.
        self.last_headers: CIMultiDict[str] = CIMultiDict()
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/", self._root)
        self.server = LocalServer(app, port)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    async def set_mode(
        self,
        mode: str,
        check: str | None = None,
        delay: float | None = None,
        period: float | None = None,
    ) -> GatewayMode:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        if check is not None and check not in CHECKS:
            raise ValueError(f"unknown check {check!r} (checks: {', '.join(CHECKS)})")
        self.state = GatewayMode(
            mode=mode,
            check=check or "d1",
            delay=delay if delay is not None else 3.0,
            period=period if period is not None else 2.0,
            since=time.monotonic(),
        )
        if mode == "down":
            await self.server.stop_listening()
        else:
            await self.server.start()
        return self.state

    def _failing_now(self) -> str | None:
        s = self.state
        if s.mode == "degraded":
            return s.check
        if s.mode == "flapping":
            half_cycles = int((time.monotonic() - s.since) / s.period)
            return s.check if half_cycles % 2 else None
        return None

    async def _health(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.last_headers = CIMultiDict(request.headers)
        response = await self._health_answer(request)
        response.headers[REGION_HEADER] = self.region
        return response

    async def _health_answer(self, request: web.Request) -> web.Response:
        colo = request.headers.get(COLO_HEADER, DIRECT_COLO)
        mode = self.state.mode
        if mode == "down":
            # A pooled keep-alive connection outlives the listener; cut it as a dead host would.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        if mode == "slow":
            await asyncio.sleep(self.state.delay)
        if mode == "gray" and CLOUDFLARE_AGENT not in request.headers.get("User-Agent", ""):
            # Healthy to Cloudflare's monitor, failing for everyone else: a gray failure.
            code, body = health_body(colo, self.state.check)
            return web.Response(status=code, text=body, content_type="application/json")
        if mode == "erroring":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "badjson":
            return web.Response(
                status=200, text='<html>"status":"healthy</html>', content_type="text/html"
            )
        if mode == "wrongbody":
            return web.Response(status=200, text='{"status":"ok"}', content_type="application/json")
        code, body = health_body(colo, self._failing_now())
        return web.Response(status=code, text=body, content_type="application/json")

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"service": "gateway", "region": self.region}, headers={REGION_HEADER: self.region}
        )


class GatewayControl:
    """An HTTP control for the gateways: ``GET /gateways``, ``POST /gateways/{region}``."""

    def __init__(self, gateways: dict[str, Gateway], port: int | None = None) -> None:
        self.gateways = gateways
        app = web.Application()
        app.router.add_get("/gateways", self._list)
        app.router.add_post("/gateways/{region}", self._set)
        self.server = LocalServer(app, port)

    @property
    def url(self) -> str:
        return self.server.url

    def _describe(self) -> dict[str, object]:
        return {
            name: {"url": gw.url, "mode": gw.state.mode, "describe": gw.state.describe()}
            for name, gw in self.gateways.items()
        }

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response(self._describe())

    async def _set(self, request: web.Request) -> web.Response:
        region = request.match_info["region"]
        gateway = self.gateways.get(region)
        if gateway is None:
            known = ", ".join(self.gateways)
            return web.json_response(
                {"error": f"unknown region {region!r} (known: {known})"}, status=404
            )
        try:
            body = await request.json()
            await gateway.set_mode(
                str(body.get("mode", "healthy")),
                body.get("check"),
                body.get("delay"),
                body.get("period"),
            )
        except (ValueError, AttributeError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self._describe()[region])
