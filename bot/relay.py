"""``failover-bot relay``: fetches the public hostname from where it runs when the bot asks.

An operator runs one in each geo region worth watching. ``GET /check`` answers the status,
latency and serving region of one request to the public hostname; ``GET /healthz`` says it is up.
With RELAY_TOKEN set, ``/check`` wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bot.fleet import PublicSettings
from bot.httplog import one_line_for_bad_http
from bot.vantages import fetch_public

CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("client", aiohttp.ClientSession)
log = logging.getLogger(__name__)
# A request's headers within 10 s of connecting (and idle keep-alive closed after 10 s): the
# relay answers the bot's GETs only, so a connection that sends nothing is not worth holding.
HANDLER_ARGS = {"keepalive_timeout": 10.0, "lingering_time": 1.0}


def bearer_matches(sent: str, token: str) -> bool:
    """``sent`` (an Authorization header) is ``Bearer <token>``, compared in constant time.

    As bytes: hmac.compare_digest raises TypeError for a str with non-ASCII characters, which
    was a 500 for ``Authorization: Bearer ключ``. aiohttp hands undecodable header bytes over
    as surrogates, which surrogateescape turns back into those bytes."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode())


def build_relay_app(public: PublicSettings, geo: str, token: str | None = None) -> web.Application:
    async def check(request: web.Request) -> web.Response:
        if token and not bearer_matches(request.headers.get("Authorization", ""), token):
            log.warning("refused /check from %s: missing or wrong Authorization", request.remote)
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

    one_line_for_bad_http()
    app = web.Application(client_max_size=1024, handler_args=HANDLER_ARGS)
    app.router.add_get("/check", check)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(client)
    return app
