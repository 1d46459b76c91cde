"""A Slack stand-in: the Web API methods the bot calls, response URLs, all recorded.

``/api/<method>`` answers like Slack (HTTP 200 with ``ok``), checks the bearer token, and keeps
channel histories so that ``chat.update`` edits what ``chat.postMessage`` posted. Response URLs
live under ``/response/<id>``. ``/_sandbox/...`` lets a person or a test read what happened;
``GET /_sandbox/responses/<id>?wait=S`` waits up to S seconds for the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.sandbox.servers import LocalServer

TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0FAILBOT"


@dataclass
class Recorded:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.time)


class SlackStandIn:
    def __init__(self, bot_token: str, port: int | None = None) -> None:
        self.bot_token = bot_token
        self.calls: list[Recorded] = []
        self.channels: dict[str, list[dict[str, Any]]] = {}
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self._response_channel: dict[str, str] = {}
        self.rate_limited = 0
        self.down = False  # every Web API call answers 503: a Slack outage
        self.usergroups: dict[str, list[str]] = {
            "S0ONCALL": ["U0ONCALL"]
        }  # the next N Web API calls answer 429, as Slack does under load
        self._changed = asyncio.Condition()
        self._ts = itertools.count(1)
        self._response_ids = itertools.count(1)
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # the SDK reads some methods with GET
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_post("/_sandbox/response_urls", self._make_response_url)
        app.router.add_get("/_sandbox/calls", self._list_calls)
        app.router.add_get("/_sandbox/channels/{channel}", self._list_channel)
        app.router.add_get("/_sandbox/responses/{rid}", self._list_responses)
        self.server = LocalServer(app, port)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api_url(self) -> str:
        return f"{self.server.url}/api/"

    def new_response_url(self, channel: str) -> str:
        """A response URL as Slack gives with a command; in_channel answers land in ``channel``."""
        rid = f"r{next(self._response_ids)}"
        self.responses[rid] = []
        self._response_channel[rid] = channel
        return f"{self.server.url}/response/{rid}"

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    async def _args(request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if request.method == "GET":
            return dict(request.query)
        if request.content_type == "application/json":
            data = json.loads(raw or "{}")
            return data if isinstance(data, dict) else {}
        args: dict[str, Any] = dict(parse_qsl(raw))
        for key in ("blocks", "attachments", "view"):
            if isinstance(args.get(key), str):
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append(Recorded(method, args))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(args.get("token", ""))
        if self.down:
            return web.Response(status=503, text="Service Unavailable")
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        if token != self.bot_token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        result = await self._answer(method, args)
        await self._notify()
        return web.json_response(result)

    async def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": f"{self.url}/",
                "team": "Sandbox",
                "user": "failover",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "B0FAILBOT",
            }
        channel = str(args.get("channel", ""))
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral") and not channel:
            return {"ok": False, "error": "channel_not_found"}
        if method == "chat.postMessage":
            ts = self._next_ts()
            message = {k: v for k, v in args.items() if k != "token"} | {"ts": ts}
            self.channels.setdefault(channel, []).append(message)
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "chat.update":
            for message in self.channels.get(channel, []):
                if message["ts"] == args.get("ts"):
                    message.update({k: v for k, v in args.items() if k not in ("token", "ts")})
                    message["edited"] = True
                    return {"ok": True, "channel": channel, "ts": message["ts"]}
            return {"ok": False, "error": "message_not_found"}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "usergroups.users.list":
            users = self.usergroups.get(str(args.get("usergroup", "")))
            if users is None:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": users}
        if method == "views.publish":
            return {"ok": True, "view": args.get("view", {})}
        return {"ok": False, "error": "unknown_method"}

    async def _response(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid not in self.responses:
            return web.Response(status=404, text="no such response_url")
        body = await request.json()
        self.responses[rid].append(body)
        if body.get("response_type") == "in_channel":
            channel = self._response_channel[rid]
            self.channels.setdefault(channel, []).append(body | {"ts": self._next_ts()})
        await self._notify()
        return web.Response(text="ok")

    async def _make_response_url(self, request: web.Request) -> web.Response:
        return web.json_response({"url": self.new_response_url(request.query.get("channel", ""))})

    async def _list_calls(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"method": c.method, "args": c.args, "at": c.at} for c in self.calls]
        )

    async def _list_channel(self, request: web.Request) -> web.Response:
        return web.json_response(self.channels.get(request.match_info["channel"], []))

    async def _list_responses(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid not in self.responses:
            return web.json_response({"error": "no such response_url"}, status=404)
        wait = float(request.query.get("wait", "0"))
        count = int(request.query.get("after", "0"))
        deadline = time.monotonic() + min(wait, 30.0)
        async with self._changed:
            while len(self.responses[rid]) <= count and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
        return web.json_response(self.responses[rid][count:])
