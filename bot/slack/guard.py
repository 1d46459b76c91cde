"""What reaches Bolt on ``POST /slack/events``: read within a time and size, signed, well formed.

Slack's "Verifying requests from Slack" (https://api.slack.com/authentication/verifying-requests-
from-slack, now https://docs.slack.dev/authentication/verifying-requests-from-slack): the
signature is ``v0=`` and the hex HMAC-SHA256, keyed with the signing secret, of
``v0:<X-Slack-Request-Timestamp>:<the raw body>``; a timestamp more than five minutes from now is
refused, so that a captured request cannot be replayed later. That is checked here over the raw
bytes, before anything is decoded or parsed: Bolt decodes and parses the body first and checks
after, so a forged body could break its parser (a 500 with a traceback) without any secret.

Every refusal is one line in the log and a 4xx: 401 unsigned, 400 signed but malformed, 403 from
another workspace, 408 a body too slow, 413 a body over 1 MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are a few KiB; a command's text at most 4,000 chars
MAX_AGE = 5 * 60  # seconds either side of now, as Slack's doc says
# Unix seconds in ASCII digits: int() also takes "１７", " 17" and "1_7", which Slack never sends.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class Refused(Exception):
    """A request the bot does not serve: ``status`` to answer, ``reason`` for the log line."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _shown(value: str, limit: int = 40) -> str:
    """A header value as the log line shows it: bounded, escapes visible."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one(headers: Mapping[str, str], name: str) -> str | None:
    """A header sent once; sent twice it is refused (Bolt would read the other value)."""
    getall = getattr(headers, "getall", None)
    values: list[str] = list(getall(name, [])) if getall is not None else []
    if getall is None and name in headers:
        values = [headers[name]]
    if len(values) > 1:
        raise Refused(401, f"{name} sent {len(values)} times")
    return values[0] if values else None


def _check_shape(body: Mapping[str, object]) -> None:
    """The parts of Slack's payloads the bot reads, in the shapes Slack sends them: a click's
    ``actions`` a non-empty list of objects, an event's ``event`` an object."""
    actions = body.get("actions")
    if body.get("type") == "block_actions" and (
        not isinstance(actions, list)
        or not actions
        or not all(isinstance(a, dict) for a in actions)
    ):
        raise Refused(400, "malformed body: block_actions without a list of actions")
    if "event" in body and not isinstance(body["event"], dict):
        raise Refused(400, "malformed body: event is not an object")
    for part in ("team", "user", "channel"):
        if part in body and not isinstance(body[part], dict | str):
            raise Refused(400, f"malformed body: {part} is neither an object nor an id")


@dataclass(frozen=True)
class SlackGuard:
    signing_secret: str
    team_id: str | None = None  # SLACK_TEAM_ID: the one workspace served; None: any
    body_timeout: float = 10.0
    clock: Callable[[], float] = time.time

    def verify(self, headers: Mapping[str, str], raw: bytes) -> None:
        """Slack's v0 signature over ``raw``, with a timestamp within five minutes."""
        if not self.signing_secret:
            raise Refused(401, "no SLACK_SIGNING_SECRET to check signatures with")
        timestamp = _one(headers, "X-Slack-Request-Timestamp")
        signature = _one(headers, "X-Slack-Signature")
        if timestamp is None or signature is None:
            raise Refused(401, "unsigned: no X-Slack-Request-Timestamp or X-Slack-Signature")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Refused(401, f"X-Slack-Request-Timestamp {_shown(timestamp)} is not Unix seconds")
        if abs(self.clock() - int(timestamp)) > MAX_AGE:
            raise Refused(401, f"X-Slack-Request-Timestamp {timestamp} is over 5 minutes away")
        if not _SIGNATURE.fullmatch(signature):
            raise Refused(401, f"X-Slack-Signature {_shown(signature)} is not v0=<64 hex digits>")
        base = b"v0:" + timestamp.encode("ascii") + b":" + raw
        expected = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(f"v0={expected}", signature):
            raise Refused(401, "wrong signature (not signed with this app's signing secret)")

    def parse(self, request: web.Request, raw: bytes) -> AsyncBoltRequest:
        """The Bolt request for ``raw``, which must be UTF-8 and the form or JSON Slack sends."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Refused(400, f"malformed body: not UTF-8 (byte {exc.start})") from None
        try:
            # Bolt's own parser, so that what is checked is what Bolt will hold; it extracts the
            # team, user and channel as it goes, which fails on anything but Slack's shapes.
            bolt = AsyncBoltRequest(body=text, query=request.query_string, headers=request.headers)  # type: ignore[arg-type]
        except RecursionError:
            raise Refused(400, "malformed body: nested too deeply") from None
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise Refused(400, f"malformed body: {type(exc).__name__}") from None
        if not isinstance(bolt.body, dict):
            raise Refused(400, f"malformed body: a JSON {type(bolt.body).__name__}, not an object")
        _check_shape(bolt.body)
        return bolt

    def check_team(self, bolt: AsyncBoltRequest) -> None:
        if self.team_id is None:
            return
        if bolt.body.get("type") == "url_verification" or bolt.body.get("ssl_check") == "1":
            return  # Slack's own checks of the URL carry no workspace
        team = bolt.context.team_id
        # An Enterprise Grid org (E…) is named by its enterprise id, a workspace by its team id.
        if self.team_id not in (team, bolt.context.enterprise_id):
            raise Refused(403, f"from workspace {team!r}, not SLACK_TEAM_ID {self.team_id}")

    async def read(self, request: web.Request) -> AsyncBoltRequest:
        """The request's body within ``body_timeout`` and MAX_BODY, verified, then parsed."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise Refused(413, f"body of {request.content_length} bytes, over 1 MiB")
        try:
            async with asyncio.timeout(self.body_timeout):
                raw = await request.read()  # the app's client_max_size stops it at MAX_BODY
        except TimeoutError:
            raise Refused(408, f"body not received within {self.body_timeout:g} s") from None
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, "body over 1 MiB") from None
        except web.RequestPayloadError as exc:  # a broken chunked or encoded body
            raise Refused(400, f"malformed body: {str(exc).splitlines()[-1].strip()}") from None
        self.verify(request.headers, raw)
        bolt = self.parse(request, raw)
        self.check_team(bolt)
        return bolt


async def refusal(request: web.Request, refused: Refused) -> web.StreamResponse:
    """The answer to a refused request, and its one log line."""
    log.warning(
        "refused %s %s from %s: %s [%d]",
        request.method,
        request.path,
        request.remote,
        refused.reason,
        refused.status,
    )
    resp = web.json_response({"ok": False, "error": refused.reason}, status=refused.status)
    if refused.status in (408, 413):
        # The rest of the body is not wanted: close rather than keep the connection.
        resp.force_close()
    if refused.status == 408:
        # A client this slow is not worth draining (aiohttp lingers to read the rest of a body
        # it did not read): answer, then drop the connection at once.
        await resp.prepare(request)
        await resp.write_eof()
        request.protocol.force_close()
    return resp
