"""The Bolt app: one ``/failover`` listener that acks at once, then answers through respond()."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.home import Home
from bot.invocation import Invocation
from bot.settings import Settings
from bot.slack.notifier import SlackNotifier
from bot.views.actions import ACTION_IDS
from bot.views.reply import Reply
from commands.router import Router

log = logging.getLogger(__name__)
SlackApp = AsyncApp  # what the rest of the bot holds: Bolt stays behind bot/slack


def web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client on SLACK_API_URL; Slack's 429s, 5xx and dropped connections retried."""
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_base,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


async def group_members(client: AsyncWebClient, group: str) -> set[str]:
    """Members of a Slack user group (usergroups:read)."""
    resp = await client.usergroups_users_list(usergroup=group)
    return set(resp.get("users") or [])


def invocation_from(body: dict[str, Any]) -> Invocation:
    return Invocation(
        user_id=str(body.get("user_id", "")),
        user_name=str(body.get("user_name", "")),
        team_id=str(body.get("team_id", "")),
        channel_id=str(body.get("channel_id", "")),
        text=str(body.get("text", "")),
    )


class Responder:
    """Replies through the request's ``response_url``, on one shared connection pool.

    Bolt's ``respond()`` opens a new aiohttp session, and so a new connection, for each reply:
    with 200 commands in flight that was the largest cost of answering them. slack_sdk's
    webhook client takes a session; Slack's transient failures are retried."""

    def __init__(self, http: aiohttp.ClientSession | None) -> None:
        self.http = http

    async def send(
        self, body: dict[str, Any], reply: Reply, *, replace_original: bool | None = None
    ) -> None:
        try:
            client = AsyncWebhookClient(
                str(body["response_url"]),
                timeout=10,
                session=self.http,
                retry_handlers=[
                    AsyncConnectionErrorRetryHandler(max_retry_count=2),
                    AsyncRateLimitErrorRetryHandler(max_retry_count=2),
                    AsyncServerErrorRetryHandler(max_retry_count=2),
                ],
            )
            resp = await client.send(
                text=reply.text,
                blocks=reply.block_dicts(),
                response_type="in_channel" if reply.public else "ephemeral",
                replace_original=replace_original,
            )
            if resp.status_code != 200:
                raise RuntimeError(f"response_url answered HTTP {resp.status_code}: {resp.body}")
        except Exception:
            log.exception("could not deliver the reply [error_id=%s]", uuid.uuid4().hex[:8])


def build_bolt_app(
    settings: Settings,
    router: Router,
    *,
    socket_mode: bool = False,
    home: Home | None = None,
    http: aiohttp.ClientSession | None = None,
) -> AsyncApp:
    app = AsyncApp(
        client=web_client(settings),
        signing_secret=settings.slack_signing_secret,
        # Over Socket Mode nothing is signed: Slack's websocket is the authentication.
        request_verification_enabled=not socket_mode,
    )

    responder = Responder(http)

    @app.command("/failover")
    async def on_failover(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 s, before any work
        await responder.send(body, await router.handle(invocation_from(body)))

    @app.action(ACTION_IDS)
    async def on_button(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        invocation = Invocation(
            user_id=str(body.get("user", {}).get("id", "")),
            user_name=str(body.get("user", {}).get("username", "")),
            team_id=str(body.get("team", {}).get("id", "")),
            channel_id=str(body.get("channel", {}).get("id", "")),
            text=f"[button] {action.get('action_id')} {action.get('value', '')}",
            kind="action",
        )
        reply = await router.handle_action(
            invocation, str(action.get("action_id")), str(action.get("value", ""))
        )
        await responder.send(body, reply, replace_original=False)

    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any]) -> None:
        if home is None or event.get("tab", "home") != "home":
            return
        try:
            await home.opened(str(event.get("user", "")), SlackNotifier(app.client))
        except Exception:
            log.exception("could not publish the App Home [error_id=%s]", uuid.uuid4().hex[:8])

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled Slack request [error_id=%s]: %r", uuid.uuid4().hex[:8], error)

    return app
