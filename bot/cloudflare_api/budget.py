"""Cloudflare's API budget, as its response headers tell it, and who may spend what is left.

fundamentals/api/reference/limits: 1,200 requests per 5 minutes per user, counted together for
the dashboard, keys and tokens; going over blocks every call for the next 5 minutes (HTTP 429).
Every REST answer carries

- ``Ratelimit``: service limit items, each its name, the remaining quota ``r`` and the seconds
  until its window resets ``t``: ``"default";r=50;t=30``;
- ``Ratelimit-Policy``: quota policies, each its name, the quota ``q`` and its window ``w`` in
  seconds: ``"burst";q=100;w=60``;

and a 429 carries ``Retry-After``: the seconds, rounded up, until there is capacity again.

What the bot does with them: below a reserve (a tenth of the quota) reads stop calling
Cloudflare (the cached view answers, saying how old it is) and so do changes that take a pool
out, so that what is left goes to the writes that put pools back; while blocked nothing is sent,
and a restore waits exactly until the block lifts, then goes first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from bot.errors import ProviderRateLimited

# The documented budget, used until Cloudflare's own Ratelimit-Policy has been seen.
DEFAULT_QUOTA = 1200
DEFAULT_WINDOW = 300.0
# The share of the quota kept for restores: below it only restores are sent.
RESERVE_FRACTION = 0.1
# Seconds after a block lifts when only restores are sent, until an answer says what is left.
RESTORES_FIRST = 1.0


class Spend(Enum):
    """What a call is for, in the order it may spend what is left of the budget."""

    RESTORE = "restore"  # enabling a pool or an origin: always, once any block has lifted
    CHANGE = "change"  # taking a pool or an origin out: not into the reserve
    READ = "read"  # not into the reserve either; the cache answers instead


class BudgetExhausted(ProviderRateLimited):
    """Cloudflare's budget does not allow this call now; ``retry_in`` says when it will, and
    ``reason`` why, in a few words fit to stand beside an answer from the cache."""

    def __init__(self, message: str, retry_in: float, reason: str = "") -> None:
        super().__init__(message)
        self.retry_in = retry_in
        self.reason = reason or message


@dataclass(frozen=True)
class Quota:
    """One item of ``Ratelimit``: what is left of a limit and when its window resets."""

    name: str
    remaining: int
    reset: float  # seconds


@dataclass(frozen=True)
class Policy:
    """One item of ``Ratelimit-Policy``: a quota over a window."""

    name: str
    quota: int
    window: float  # seconds


def _items(header: str) -> list[tuple[str, dict[str, str]]]:
    """A structured-field list: ``"name";k=v;k=v, "other";k=v`` -> [(name, {k: v})]."""
    out: list[tuple[str, dict[str, str]]] = []
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts or not parts[0]:
            continue
        name = parts[0].strip('"')
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if sep:
                params[key.strip().lower()] = value.strip().strip('"')
        out.append((name, params))
    return out


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_ratelimit(header: str | None) -> list[Quota]:
    """``Ratelimit: "default";r=50;t=30`` -> [Quota("default", 50, 30.0)]; items it cannot read
    are left out."""
    quotas = []
    for name, params in _items(header or ""):
        remaining, reset = _number(params.get("r")), _number(params.get("t"))
        if remaining is not None:
            quotas.append(Quota(name, int(remaining), reset or 0.0))
    return quotas


def parse_policy(header: str | None) -> list[Policy]:
    """``Ratelimit-Policy: "default";q=1200;w=300`` -> [Policy("default", 1200, 300.0)]."""
    policies = []
    for name, params in _items(header or ""):
        quota, window = _number(params.get("q")), _number(params.get("w"))
        if quota is not None and window:
            policies.append(Policy(name, int(quota), window))
    return policies


def parse_retry_after(header: str | None) -> float | None:
    """Seconds from ``Retry-After`` (Cloudflare sends seconds; an HTTP date is not expected)."""
    return _number(header)


class ApiBudget:
    """What is left of Cloudflare's API budget, from the headers of every answer."""

    def __init__(
        self,
        reserve_fraction: float = RESERVE_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reserve_fraction = reserve_fraction
        self.clock = clock
        self.quota = DEFAULT_QUOTA
        self.window = DEFAULT_WINDOW
        self.remaining: int | None = None  # None: not known (nothing heard in this window)
        self.resets_at: float | None = None
        self.blocked_until: float | None = None  # the last block's end, kept once it is over
        self.heard_since_block = True  # an answer came after the last block ended
        self.last_seen: Quota | None = None

    # ------------------------------------------------------------------ what Cloudflare said

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in one answer's headers (any status: a 500 carries them too)."""
        now = self.clock()
        if status != 429 and self.blocked_until is not None and now >= self.blocked_until:
            self.heard_since_block = True
        policies = parse_policy(headers.get("ratelimit-policy"))
        quotas = parse_ratelimit(headers.get("ratelimit"))
        if quotas:
            # The tightest limit is the one that blocks first.
            tightest = min(quotas, key=lambda q: q.remaining)
            self.last_seen = tightest
            self.remaining = tightest.remaining
            self.resets_at = now + tightest.reset
            policy = next((p for p in policies if p.name == tightest.name), None)
            if policy is not None:
                self.quota, self.window = policy.quota, policy.window
        if status == 429:
            wait = parse_retry_after(headers.get("retry-after"))
            if wait is None:
                # Not documented without the header: assume the documented block.
                wait = self.window
            self.blocked_until = max(self.blocked_until or 0.0, now + wait)
            if wait > 0:  # a block: when it lifts, restores go first
                self.heard_since_block = False
            self.remaining = 0
            self.resets_at = self.blocked_until

    # ------------------------------------------------------------------ what is left

    @property
    def reserve(self) -> int:
        return max(1, math.ceil(self.quota * self.reserve_fraction))

    def blocked_for(self) -> float:
        """Seconds until a 429 block lifts (0: not blocked)."""
        if self.blocked_until is None:
            return 0.0
        return max(0.0, self.blocked_until - self.clock())

    def restores_first_for(self) -> float:
        """Seconds during which a block that just lifted is kept for restores (0: it is not):
        until an answer says what is left, or RESTORES_FIRST has passed."""
        if self.blocked_until is None or self.heard_since_block:
            return 0.0
        return max(0.0, self.blocked_until + RESTORES_FIRST - self.clock())

    def left(self) -> int | None:
        """Calls left in this window; None when not known (its reset has passed)."""
        if self.remaining is None or self.resets_at is None:
            return None
        if self.clock() >= self.resets_at:
            self.remaining = self.resets_at = None
            return None
        return self.remaining

    def resets_in(self) -> float:
        if self.resets_at is None:
            return 0.0
        return max(0.0, self.resets_at - self.clock())

    def low(self) -> bool:
        """Whether what is left is within the reserve kept for restores."""
        left = self.left()
        return left is not None and left <= self.reserve

    def check(self, spend: Spend, what: str) -> None:
        """Raise BudgetExhausted when ``spend`` may not call Cloudflare now."""
        blocked = self.blocked_for()
        if blocked > 0:
            reason = f"Cloudflare blocks the bot's API calls for {blocked:.0f} s more"
            raise BudgetExhausted(
                f"{reason} (its limit of {self.quota} calls per {self.window:g} s was "
                f"reached); {what} did not happen",
                blocked,
                reason,
            )
        if spend is Spend.RESTORE:
            return
        first = self.restores_first_for()
        if first > 0:
            reason = "Cloudflare's block has just lifted, and restores go first"
            raise BudgetExhausted(f"{reason}; {what} did not happen", first, reason)
        if not self.low():
            return
        left, reset = self.left(), self.resets_in()
        reason = (
            f"Cloudflare's API budget is nearly spent ({left} of {self.quota} calls left for "
            f"{reset:.0f} s)"
        )
        raise BudgetExhausted(
            f"{reason}, and the rest is kept for restores; {what} did not happen", reset, reason
        )

    def describe(self) -> str:
        left = self.left()
        if self.blocked_for() > 0:
            return f"blocked for {self.blocked_for():.0f} s"
        if left is None:
            return f"{self.quota} calls per {self.window:g} s, none counted yet"
        return f"{left} of {self.quota} calls left for {self.resets_in():.0f} s"
