"""A Bolt middleware that answers a replayed Slack request without acting on it.

It runs after Bolt's signature check (global middleware follow the built-in ones), so only
requests signed with the app's secret are recorded. A slash command or a button click is sent
once: Slack does not retry them, and one not acknowledged within 3 s is shown to the user as
failed ("Acknowledging requests", https://docs.slack.dev/tools/bolt-python/concepts/acknowledge;
"Enabling interactivity with Slash commands",
https://api.slack.com/interactivity/slash-commands#responding_to_commands), so the same signed
command twice is a replay. Events API deliveries that Slack retries carry
X-Slack-Retry-Num and X-Slack-Retry-Reason (https://api.slack.com/apis/events-api#retries) and
are deliveries of their own, signed afresh; that header is not signed, so it exempts nothing
here. The App Home's ``app_home_opened``, the one event the bot handles, is harmless twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.db.engine import database_error
from bot.db.replays import SeenRequests

log = logging.getLogger(__name__)

Middleware = Callable[..., Awaitable[Any]]


def _header(req: AsyncBoltRequest, name: str) -> str:
    values = req.headers.get(name) or []
    return str(values[0]) if values else ""


def replay_guard(seen: SeenRequests) -> Middleware:
    async def guard(
        req: AsyncBoltRequest, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        timestamp = _header(req, "x-slack-request-timestamp")
        signature = _header(req, "x-slack-signature")
        if not timestamp.isdigit() or not signature:
            # Socket Mode: nothing is signed (Slack's websocket is the authentication).
            return await next()
        try:
            first = await seen.first_time(timestamp, signature)
        except Exception as exc:
            # Without the database nothing that changes traffic can act anyway (operations
            # live there); status and the other reads still answer. A lost database is one
            # line; anything else, a bug, keeps its traceback.
            why = database_error(exc)
            error_id = uuid.uuid4().hex[:8]
            if why is None:
                log.exception("could not check for a replay [error_id=%s]", error_id)
            else:
                log.warning("could not check for a replay: %s [error_id=%s]", why, error_id)
            return await next()
        if first:
            return await next()
        log.warning(
            "a replayed Slack request was answered without acting (timestamp %s)", timestamp
        )
        # An empty 200 is an acknowledgement that shows nothing, and acts on nothing.
        return BoltResponse(status=200, body="")

    return guard
