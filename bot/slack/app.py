"""The Bolt app: one ``/failover`` listener that acks at once, then answers through respond()."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.db.replays import SeenRequests
from bot.errors import ConfigError
from bot.home import Home
from bot.invocation import Invocation
from bot.settings import Settings
from bot.slack.notifier import SlackNotifier
from bot.slack.replays import replay_guard
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


Authorizer = Callable[[str | None, str | None, str | None], Awaitable[AuthorizeResult]]
# auth.test's answers for a token Slack will never take (https://api.slack.com/methods/auth.test).
REFUSED_TOKEN = ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired")


class _TokenNotIgnored(logging.Filter):
    """Given ``authorize``, Bolt warns at construction that the token will be ignored. It is not:
    the client keeps it for the Web API, and ``authorize`` hands it to each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("As `installation_store` or `authorize`")


logging.getLogger("slack_bolt.AsyncApp").addFilter(_TokenNotIgnored())


class SlackIdentity:
    """Who the bot is in Slack, from one auth.test at start, for every request after it.

    Bolt's single-workspace authorization calls auth.test at the first request, and at each one
    after until it succeeds; a connection error there fails the request with HTTP 500, so Slack
    unreachable at a start left every command unanswered. A command is answered through its
    response URL, which needs no token (https://api.slack.com/interactivity/handling#message_responses),
    so the token is checked once at start, with the client's retries, and requests are authorized
    from that result through Bolt's ``authorize`` option
    (https://docs.slack.dev/tools/bolt-python/concepts/authorization).
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.team_id: str | None = None
        self.bot_id: str | None = None
        self.bot_user_id: str | None = None

    async def verify(self, client: AsyncWebClient) -> None:
        """A refused token stops the start (ConfigError); Slack out of reach is only logged."""
        try:
            resp = await client.auth_test()
        except SlackApiError as exc:
            # A 5xx from a proxy or an outage has no JSON body: data is then text.
            data = exc.response.data if exc.response is not None else None
            error = data.get("error") if isinstance(data, dict) else None
            if error in REFUSED_TOKEN:
                raise ConfigError(
                    f"SLACK_BOT_TOKEN was refused by Slack ({error}): expected the Bot User "
                    "OAuth Token of the installed app (xoxb-...)"
                ) from None
            self._unverified(str(error or exc))
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._unverified(str(exc) or type(exc).__name__)
            return
        self.team_id = resp.get("team_id")
        self.bot_id = resp.get("bot_id")
        self.bot_user_id = resp.get("user_id")

    @staticmethod
    def _unverified(why: str) -> None:
        log.warning(
            "could not check SLACK_BOT_TOKEN with Slack's Web API (%s): serving anyway; "
            "commands are answered through their response URLs",
            why,
        )

    def authorizer(self) -> Authorizer:
        """Bolt's ``authorize`` function (a plain function: Bolt passes arguments by name)."""

        async def authorize(
            enterprise_id: str | None, team_id: str | None, user_id: str | None
        ) -> AuthorizeResult:
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id or self.team_id,
                bot_token=self.token,
                bot_id=self.bot_id,
                bot_user_id=self.bot_user_id,
                user_id=user_id,
            )

        return authorize


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


@contextmanager
def _bolt_token_variable_hidden() -> Iterator[None]:
    """SLACK_BOT_TOKEN out of the environment while Bolt's AsyncApp is built (it reads it there
    by itself; the bot hands it the token explicitly), put back at once."""
    saved = os.environ.pop("SLACK_BOT_TOKEN", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["SLACK_BOT_TOKEN"] = saved


def build_bolt_app(
    settings: Settings,
    router: Router,
    *,
    socket_mode: bool = False,
    home: Home | None = None,
    http: aiohttp.ClientSession | None = None,
    replays: SeenRequests | None = None,
    identity: SlackIdentity | None = None,
) -> AsyncApp:
    identity = identity or SlackIdentity(settings.slack_bot_token or "")
    # Each request gets the token from ``authorize``. Handed a client holding a token too, or
    # finding SLACK_BOT_TOKEN in the environment, AsyncApp warns at every start that one of them
    # "will be unused" (slack_bolt/app/async_app.py, __init__): so it is built from the client
    # without its token and without the variable in sight, and the client gets the token back
    # for what the bot sends on its own (alerts, the App Home, user groups).
    client = web_client(settings)
    token, client.token = client.token, None
    with _bolt_token_variable_hidden():
        app = AsyncApp(
            client=client,
            signing_secret=settings.slack_signing_secret,
            # Over Socket Mode nothing is signed: Slack's websocket is the authentication.
            request_verification_enabled=not socket_mode,
            authorize=identity.authorizer(),  # no auth.test per request (SlackIdentity)
        )
    client.token = token

    if replays is not None and not socket_mode:
        app.use(replay_guard(replays))  # a replayed signed request is answered, never acted on
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
