"""HTTP mode: ``POST /slack/events``, ``GET /healthz`` and ``GET /metrics``.

Requests to /slack/events are read, verified and parsed by ``SlackGuard`` (bot/slack/guard.py)
before Bolt sees them; /metrics may have its own port and a bearer token (METRICS_PORT,
METRICS_TOKEN).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.engine import ping
from bot.errors import ConfigError
from bot.httplog import one_line_for_bad_http
from bot.metrics import exposition_chunks
from bot.settings import Settings
from bot.slack.guard import MAX_BODY, Refused, SlackGuard, refusal

log = logging.getLogger(__name__)


def handler_args(settings: Settings | None) -> dict[str, float | bool]:
    """aiohttp's per-connection limits (Application(handler_args=...), passed to its
    RequestHandler; docs.aiohttp.org, web_reference: AppRunner's kwargs). aiohttp has no header
    timeout of its own: ``keepalive_timeout`` runs from the connection's start (and from each
    answer) until a request's headers are in, so it bounds both a slow request line and headers
    and an idle keep-alive connection. ``lingering_time`` is how long the unread rest of a refused
    body is drained before the connection closes. ``auto_decompress`` off: Slack signs the bytes
    it sends, never compressed, so those bytes are what the signature is checked over."""
    header_timeout = settings.http_header_timeout if settings else 10.0
    return {"keepalive_timeout": header_timeout, "lingering_time": 1.0, "auto_decompress": False}


def _bearer_ok(request: web.Request, token: str) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII str (a TypeError, so a 500, before).
    sent = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(sent, f"Bearer {token}".encode())


def metrics_handler(settings: Settings | None) -> Handler:
    token = settings.metrics_token if settings else None

    async def prometheus(request: web.Request) -> web.StreamResponse:
        if token and not _bearer_ok(request, token):
            log.warning("refused GET /metrics from %s: no or wrong bearer token", request.remote)
            return web.json_response(
                {"error": "missing or wrong Authorization bearer token (METRICS_TOKEN)"},
                status=401,
            )
        # Sent in pieces as written (chunked): the page is never held whole (bot/metrics.py).
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        if request.method != "HEAD":  # add_get answers HEAD too: headers only, or the
            for chunk in exposition_chunks():  # page would be read as the next response
                await response.write(chunk)
        await response.write_eof()
        return response

    return prometheus


def build_metrics_app(settings: Settings) -> web.Application:
    """/metrics alone, for METRICS_PORT (a port a firewall keeps to the scrapers)."""
    app = web.Application(client_max_size=1024, handler_args=handler_args(settings))
    app.router.add_get("/metrics", metrics_handler(settings))
    return app


async def start_metrics(settings: Settings) -> web.AppRunner | None:
    """/metrics served on METRICS_PORT when it is set (then PORT serves no /metrics)."""
    if settings.metrics_port is None:
        return None
    runner = web.AppRunner(build_metrics_app(settings), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", settings.metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"METRICS_PORT {settings.metrics_port} cannot be listened on "
            f"({exc.strerror or exc}): set it to a free port, or unset it"
        ) from None
    log.info("serving GET /metrics on port %d", settings.metrics_port)
    return runner


def build_web_app(
    bolt_app: AsyncApp,
    engine: AsyncEngine | None = None,
    *,
    settings: Settings | None = None,
    webhooks: Mapping[str, Handler] | None = None,
) -> web.Application:
    """``engine``: the database /healthz reports on (503 when it cannot run SELECT 1 in 1 s);
    ``settings``: the signing secret, SLACK_TEAM_ID, the read timeouts and /metrics' own;
    ``webhooks``: other services' POSTs by path (Bot.webhooks: Cloudflare's notifications,
    bot/slack/cloudflare_webhook.py, and PagerDuty's, bot/slack/pagerduty_webhook.py)."""

    # Settings passed by the runtime; without them (older callers), the Bolt app's own secret.
    if settings is not None:
        secret = settings.slack_signing_secret
    else:
        secret = getattr(bolt_app, "_signing_secret", None)
    guard = SlackGuard(
        secret or "",
        team_id=settings.slack_team_id if settings else None,
        body_timeout=settings.http_body_timeout if settings else 10.0,
    )

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            bolt_request = await guard.read(request)
        except Refused as refused:
            return await refusal(request, refused)
        bolt_response = await bolt_app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def healthz(request: web.Request) -> web.Response:
        if engine is None:
            return web.json_response({"ok": True})
        # Commands and the watch need the database: an instance without it is not healthy.
        problem = await ping(engine, within=1.0)
        if problem is not None:
            return web.json_response({"ok": False, "database": problem}, status=503)
        return web.json_response({"ok": True, "database": "ok"})

    one_line_for_bad_http()
    app = web.Application(client_max_size=MAX_BODY, handler_args=handler_args(settings))
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    for path, handler in (webhooks or {}).items():
        app.router.add_post(path, handler)
    if settings is None or settings.metrics_port is None:
        app.router.add_get("/metrics", metrics_handler(settings))
    return app
