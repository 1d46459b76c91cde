"""The user's side of Slack: signed slash commands and button clicks sent to the bot over HTTP."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack import TEAM_ID

OPERATOR = "U0OPERATOR"
CHANNEL = "C0FAILOVER"


@dataclass
class Exchange:
    """What one command or click got back: the HTTP answer to the post and the replies after it."""

    status: int
    ack_body: str
    ack_seconds: float
    replies: list[dict[str, Any]] = field(default_factory=list)
    reply_seconds: float | None = None


class SlackUser:
    """Signs requests with the app's signing secret, exactly as Slack does (v0, HMAC-SHA256)."""

    def __init__(self, bot_events_url: str, slack_url: str, signing_secret: str) -> None:
        self.events_url = bot_events_url
        self.slack_url = slack_url
        self.signer = SignatureVerifier(signing_secret)
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        # made on first use, inside the event loop; aiohttp rather than httpx so that a crowd of
        # users (bench/ack.py) costs the client little, and no limit on connections: each user
        # holds one for its post and one for its long poll
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=30.0),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def signed_headers(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": self.signer.generate_signature(timestamp=ts, body=body) or "",
        }

    async def _response_url(self, channel: str) -> str:
        async with self.http.post(
            f"{self.slack_url}/_sandbox/response_urls", params={"channel": channel}
        ) as resp:
            url: str = (await resp.json())["url"]
        return url

    async def _post(self, body: str, response_url: str, wait: float, expect: int) -> Exchange:
        started = time.perf_counter()
        async with self.http.post(
            self.events_url, data=body, headers=self.signed_headers(body)
        ) as resp:
            exchange = Exchange(resp.status, await resp.text(), time.perf_counter() - started)
        if exchange.status != 200 or expect == 0:
            return exchange
        rid = response_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + wait
        while len(exchange.replies) < expect and time.monotonic() < deadline:
            left = max(0.1, deadline - time.monotonic())
            async with self.http.get(
                f"{self.slack_url}/_sandbox/responses/{rid}",
                params={"wait": f"{left:.2f}", "after": str(len(exchange.replies))},
            ) as got:
                exchange.replies.extend(await got.json())
            if exchange.replies and exchange.reply_seconds is None:
                exchange.reply_seconds = time.perf_counter() - started
        return exchange

    async def command(
        self,
        text: str,
        *,
        user: str = OPERATOR,
        channel: str = CHANNEL,
        wait: float = 10.0,
        expect: int = 1,
    ) -> Exchange:
        """Send ``/failover <text>`` and wait up to ``wait`` s for ``expect`` replies."""
        response_url = await self._response_url(channel)
        form = {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": "failover",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/failover",
            "text": text,
            "api_app_id": "A0FAILOVER",
            "response_url": response_url,
            "trigger_id": f"trigger.{time.time_ns()}",
        }
        return await self._post(urlencode(form), response_url, wait, expect)

    async def event(self, event: dict[str, Any]) -> int:
        """Deliver an Events API callback (e.g. app_home_opened); returns the HTTP status."""
        body = json.dumps(
            {
                "type": "event_callback",
                "team_id": TEAM_ID,
                "api_app_id": "A0FAILOVER",
                "event": event,
                "event_id": f"Ev{time.time_ns()}",
                "event_time": int(time.time()),
            }
        )
        headers = self.signed_headers(body) | {"Content-Type": "application/json"}
        async with self.http.post(self.events_url, data=body, headers=headers) as resp:
            return resp.status

    async def click(
        self,
        action_id: str,
        value: str,
        *,
        block_id: str = "actions",
        user: str = OPERATOR,
        channel: str = CHANNEL,
        message: dict[str, Any] | None = None,
        wait: float = 10.0,
        expect: int = 1,
    ) -> Exchange:
        """Click a button, as Slack posts a ``block_actions`` payload."""
        response_url = await self._response_url(channel)
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "sandbox"},
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": "A0FAILOVER",
            "channel": {"id": channel, "name": "failover"},
            "container": {"type": "message", "channel_id": channel, "is_ephemeral": False},
            "message": message or {},
            "response_url": response_url,
            "trigger_id": f"trigger.{time.time_ns()}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return await self._post(body, response_url, wait, expect)
