"""``failover-bot relay``: fetches the public hostname from where it runs when the bot asks.

An operator runs one in each geo region worth watching. ``GET /check`` answers the status,
latency and serving region of one request to the public hostname; ``GET /healthz`` says it is up.
With RELAY_TOKEN set, ``/check`` wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac

import httpx
from aiohttp import web

from bot.fleet import PublicSettings
from bot.vantages import fetch_public


def build_relay_app(public: PublicSettings, geo: str, token: str | None = None) -> web.Application:
    client = httpx.AsyncClient(timeout=10.0)

    async def check(request: web.Request) -> web.Response:
        if token and not hmac.compare_digest(
            request.headers.get("Authorization", ""), f"Bearer {token}"
        ):
            return web.json_response(
                {"error": "missing or wrong Authorization bearer token"}, status=401
            )
        result = await fetch_public(client, public, f"relay {geo}", geo)
        return web.json_response(result.to_json())

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "geo": geo})

    async def close_client(app: web.Application) -> None:
        await client.aclose()

    app = web.Application()
    app.router.add_get("/check", check)
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(close_client)
    return app
