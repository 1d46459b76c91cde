"""``failover-bot relay``: fetches the public hostname from where it runs when the bot asks.

An operator runs one in each geo region worth watching. ``GET /check`` answers the status,
latency and serving region of one request to the public hostname; ``GET /healthz`` says it is up.
With RELAY_TOKEN set, ``/check`` wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bot.fleet import PublicSettings
from bot.vantages import fetch_public

CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("client", aiohttp.ClientSession)


def build_relay_app(public: PublicSettings, geo: str, token: str | None = None) -> web.Application:
    async def check(request: web.Request) -> web.Response:
        if token and not hmac.compare_digest(
            request.headers.get("Authorization", ""), f"Bearer {token}"
        ):
            return web.json_response(
                {"error": "missing or wrong Authorization bearer token"}, status=401
            )
        result = await fetch_public(request.app[CLIENT], public, f"relay {geo}", geo, limit=10.0)
        return web.json_response(result.to_json())

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "geo": geo})

    async def client(app: web.Application) -> AsyncIterator[None]:
        # Made in the running loop, closed with the app.
        async with aiohttp.ClientSession() as session:
            app[CLIENT] = session
            yield

    app = web.Application()
    app.router.add_get("/check", check)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(client)
    return app
