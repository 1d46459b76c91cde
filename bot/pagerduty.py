"""PagerDuty's Events API v2: one POST per event, and what its answer means for a retry.

aiohttp, on the bot's one event loop: the official ``pagerduty`` package is synchronous (built on
requests), so it would block the loop or need a thread per page. The request and its answers
follow https://developer.pagerduty.com/docs/events-api-v2-overview ("Response Codes & Retry
Logic": 202 accepted; 400 invalid, not retried; 429 and 5xx and network errors retried after some
time; any other 4xx is not PagerDuty judging the event, e.g. a proxy's 403/407/413 or a wrong URL's
404, so it is retried too, and logged loudly by the sender) and
https://developer.pagerduty.com/docs/send-alert-event (the fields and their limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

TIMEOUT = 10.0  # seconds for one POST; the sender retries later, the watch never waits on it
SUMMARY_LIMIT = 1024  # payload.summary: "The maximum permitted length ... is 1024 characters"
DEDUP_LIMIT = 255  # dedup_key: "The maximum permitted length ... is 255 characters"


@dataclass(frozen=True)
class Delivery:
    """What became of one event: ``accepted``; else ``retry`` (after ``retry_after`` seconds when
    PagerDuty said so) or not (PagerDuty refused it: ``reason`` says why)."""

    accepted: bool
    retry: bool
    reason: str
    retry_after: float | None = None
    misdirected: bool = False  # a 4xx other than 400/429: a configuration to fix, not an outage


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _errors(body: str) -> str:
    """PagerDuty's 400 body: {"status": "invalid event", "message": ..., "errors": [...]}."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200] or "no reason given"
    if not isinstance(data, dict):
        return body.strip()[:200]
    errors = data.get("errors")
    said = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else ""
    return said or str(data.get("message") or data.get("status") or "no reason given")


class EventsApi:
    """POSTs events to ``url`` (https://events.pagerduty.com/v2/enqueue, or the sandbox's)."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def send(self, event: dict[str, Any]) -> Delivery:
        try:
            async with self.http.post(
                self.url, json=event, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
            ) as resp:
                body = await resp.text()
                status = resp.status
                after = _retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Delivery(False, True, f"unreachable: {str(exc) or type(exc).__name__}")
        if 200 <= status < 300:
            return Delivery(True, False, "accepted")
        if status == 400:
            # The only answer PagerDuty documents as final: the event itself is invalid.
            return Delivery(False, False, f"HTTP 400: {_errors(body)}")
        if status == 429:
            return Delivery(False, True, "rate limited (HTTP 429)", after)
        if status >= 500:
            return Delivery(False, True, f"HTTP {status}", after)
        # Another 4xx (401/403/404/408/413...): a proxy or a wrong URL, not PagerDuty refusing
        # the event; it can heal, so retried with backoff (``misdirected`` logs it as an error).
        return Delivery(False, True, f"HTTP {status}: {_errors(body)}", after, misdirected=True)
