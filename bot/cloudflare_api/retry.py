"""The retry policy of restores: put a pool back as soon as Cloudflare takes the call.

A restore is not a read: it is not held by the read circuit breaker's 30 s cooldown, and it is
tried again after a short, growing pause (0.5 s, 1 s, 2 s, then every 4 s) for as long as
Cloudflare's trouble is the kind that passes: a 5xx, a timeout, no connection, a rate limit
(whose wait Cloudflare says, and which is waited exactly). A refusal (a token without the
permission, a pool that does not exist, a malformed request) is not retried: it would only fail
again, and its caller says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.cloudflare_api.budget import BudgetExhausted
from bot.errors import ProviderError, ProviderRateLimited, ProviderUnavailable

T = TypeVar("T")
# Told of each failed attempt: the error, its attempt number, and the pause before the next one
# (None: there is no next one, the error is raised).
OnFailure = Callable[[ProviderError, int, float | None], Awaitable[None]]


def transient(exc: BaseException) -> bool:
    """Whether Cloudflare's failure is of the kind that passes (worth trying again soon)."""
    return isinstance(exc, (ProviderUnavailable, ProviderRateLimited))


@dataclass(frozen=True)
class RetryPolicy:
    first: float = 0.5  # seconds before the second attempt
    factor: float = 2.0
    cap: float = 4.0  # the longest pause between two attempts (but a rate limit's own wait)
    attempts: int | None = None  # None: until it succeeds
    within: float | None = None  # seconds: no attempt starts later than this after the first

    def pause(self, attempt: int, exc: BaseException | None = None) -> float:
        """The pause after failed attempt ``attempt`` (1-based)."""
        if isinstance(exc, BudgetExhausted) and exc.retry_in > 0:
            return exc.retry_in + 0.05  # Cloudflare said when: no sooner, and no later
        return min(self.cap, self.first * self.factor ** (attempt - 1))

    def bounded(self, attempts: int | None = None, within: float | None = None) -> RetryPolicy:
        return RetryPolicy(self.first, self.factor, self.cap, attempts, within)


RESTORE = RetryPolicy()


async def retry_restore(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RESTORE,
    on_failure: OnFailure | None = None,
    give_up: Callable[[int], bool] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    attempt: int = 0,
) -> T:
    """Run ``call`` until it succeeds, on ``policy``; a failure that does not pass is raised at
    once, and so is the last one when the policy's attempts or time run out, or ``give_up``
    says so for the attempt just failed (e.g. the bot is stopping). ``attempt``: how many
    attempts earlier runs made (the pauses carry on from there)."""
    started = clock()
    while True:
        attempt += 1
        try:
            return await call()
        except ProviderError as exc:
            if not transient(exc):
                raise
            pause = policy.pause(attempt, exc)
            last = (
                (policy.attempts is not None and attempt >= policy.attempts)
                or (policy.within is not None and clock() + pause - started > policy.within)
                or (give_up is not None and give_up(attempt))
            )
            if on_failure is not None:
                await on_failure(exc, attempt, None if last else pause)
            if last:
                raise
            await sleep(pause)
