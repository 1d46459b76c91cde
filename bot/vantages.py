"""What users get from the public hostname: from the bot's location, and through relays.

The pool that served a request is read by the rule in failover.toml (a header or a JSON field);
without a rule, or when the answer does not say, it is unknown, never guessed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

import aiohttp

from bot.fleet import Fleet, PublicSettings, Relay, ServedBy
from bot.reads import PublicCheck

MAX_BODY = 64 * 1024  # a health answer is small; never buffer an unbounded one


def served_by(
    rule: ServedBy | None, headers: Mapping[str, str], body: bytes
) -> tuple[str | None, str | None]:
    """(region, what the answer said) by ``rule``; (None, None) when it says nothing."""
    if rule is None:
        return None, None
    said: str | None = None
    if rule.header is not None:
        said = headers.get(rule.header)
    elif rule.json_field is not None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get(rule.json_field) is not None:
            said = str(payload[rule.json_field])
    if said is None:
        return None, None
    region = rule.values.get(said, said if not rule.values else None)
    return region, said


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def fetch_public(
    client: aiohttp.ClientSession,
    public: PublicSettings,
    where: str,
    geo: str | None,
    limit: float = 5.0,
) -> PublicCheck:
    """One request to the public hostname, as a user in ``geo`` would make it (redirects are
    followed, as a browser would)."""
    headers = {public.geo_header: geo} if public.geo_header and geo else {}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit), client.get(public.url, headers=headers) as resp:
            body = await resp.content.read(MAX_BODY)
            status, answer = resp.status, resp.headers
    except TimeoutError:
        return PublicCheck(where, geo, error=f"timeout after {limit:g} s")
    except aiohttp.ClientError as exc:
        return PublicCheck(where, geo, error=_error(exc))
    latency = time.perf_counter() - started
    region, said = served_by(public.served_by, answer, body)
    return PublicCheck(
        where,
        geo,
        status=status,
        latency=latency,
        region=region,
        said=said if region is None else None,
        retry_after=answer.get("Retry-After"),
    )


async def ask_relay(
    client: aiohttp.ClientSession, relay: Relay, token: str | None, limit: float
) -> PublicCheck:
    where = f"relay {relay.geo}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            asyncio.timeout(limit),
            client.get(f"{relay.url}/check", headers=headers) as resp,
        ):
            resp.raise_for_status()
            return PublicCheck.from_json(await resp.json(content_type=None), where)
    except TimeoutError:
        return PublicCheck(where, relay.geo, error=f"relay gave no answer within {limit:g} s")
    except (aiohttp.ClientError, ValueError) as exc:
        return PublicCheck(where, relay.geo, error=f"relay failed: {_error(exc)}")


class Vantages:
    """The public hostname from the bot's location and from every relay, at once."""

    def __init__(
        self, fleet: Fleet, client: aiohttp.ClientSession, relay_token: str | None = None
    ) -> None:
        self.fleet = fleet
        self.client = client
        self.relay_token = relay_token

    def missing(self, reason: str) -> list[PublicCheck]:
        """What to show for every vantage point when none of them could report."""
        if self.fleet.public is None:
            return []
        here = [PublicCheck(self.fleet.public.location, None, error=reason)]
        return here + [
            PublicCheck(f"relay {r.geo}", r.geo, error=reason) for r in self.fleet.relays
        ]

    async def check(self, budget: float) -> list[PublicCheck]:
        public = self.fleet.public
        if public is None:
            return []
        jobs = [fetch_public(self.client, public, public.location, None, limit=budget)]
        jobs += [ask_relay(self.client, r, self.relay_token, budget) for r in self.fleet.relays]
        return list(await asyncio.gather(*jobs))
