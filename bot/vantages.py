"""What users get from the public hostname: from the bot's location, and through relays.

The pool that served a request is read by the rule in failover.toml (a header or a JSON field);
without a rule, or when the answer does not say, it is unknown, never guessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Annotated, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.fleet import Fleet, PublicSettings, Relay, ServedBy
from bot.reads import PublicCheck

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # a health answer is small; never buffer an unbounded one
# A relay's /check answer is one PublicCheck in JSON, some 200 bytes; 16 KiB is nonsense.
MAX_RELAY_ANSWER = 16 * 1024
_Text = Annotated[str, Field(max_length=500)]


class RelayAnswer(BaseModel):
    """What ``failover-bot relay`` answers on /check (PublicCheck.to_json); anything else, such
    as ``[]``, ``null`` or ``{"latency": "fast"}``, is nonsense, shown as such for that relay."""

    # Strict: a relay sends numbers as numbers; "200" or "fast" is not one.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    geo: _Text | None = None
    status: Annotated[int, Field(ge=100, le=599)] | None = None
    latency: Annotated[float, Field(ge=0, le=3600)] | None = None
    region: _Text | None = None
    said: _Text | None = None
    error: _Text | None = None
    retry_after: _Text | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.status is None and self.error is None:
            raise ValueError("neither a status nor an error")
        if self.latency is not None and not math.isfinite(self.latency):
            raise ValueError("latency is not a finite number")
        return self

    def check(self, where: str) -> PublicCheck:
        return PublicCheck.from_json(self.model_dump(), where)


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


async def read_capped(content: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole body if it is at most ``cap`` bytes; None, having read no more than
    ``cap`` + 1, when it is longer (a 5 MB answer was read in full before)."""
    body = bytearray()
    while len(body) <= cap:
        chunk = await content.read(cap + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


def nonsense(where: str, geo: str, why: str) -> PublicCheck:
    log.warning("%s answered nonsense: %s", where, why)
    return PublicCheck(where, geo, error=f"{where} answered nonsense ({why})")


def _why(exc: ValidationError) -> str:
    err = exc.errors()[0]
    at = ".".join(str(p) for p in err["loc"])
    return f"{at}: {err['msg']}" if at else str(err["msg"])


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
            if (resp.content_length or 0) > MAX_RELAY_ANSWER:
                return nonsense(where, relay.geo, f"{resp.content_length} bytes, over 16 KiB")
            body = await read_capped(resp.content, MAX_RELAY_ANSWER)
    except TimeoutError:
        return PublicCheck(where, relay.geo, error=f"relay gave no answer within {limit:g} s")
    except aiohttp.ClientError as exc:
        return PublicCheck(where, relay.geo, error=f"relay failed: {_error(exc)}")
    if body is None:
        return nonsense(where, relay.geo, "over 16 KiB")
    try:
        return RelayAnswer.model_validate_json(body).check(where)
    except ValidationError as exc:
        return nonsense(where, relay.geo, _why(exc))


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
        where = [(public.location, None)] + [(f"relay {r.geo}", r.geo) for r in self.fleet.relays]
        # Each vantage point on its own: one that fails in a way not foreseen costs its own line.
        results = await asyncio.gather(*jobs, return_exceptions=True)
        checks = []
        for (name, geo), result in zip(where, results, strict=True):
            if isinstance(result, PublicCheck):
                checks.append(result)
            elif isinstance(result, Exception):
                log.warning("%s failed: %s", name, _error(result))
                checks.append(PublicCheck(name, geo, error=f"failed: {_error(result)}"))
            else:
                raise result  # CancelledError and the like are not an angle's failure
        return checks
