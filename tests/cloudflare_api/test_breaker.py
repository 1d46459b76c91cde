"""The circuit breaker: open after five failures in a row, one trial after thirty seconds."""

from __future__ import annotations

import pytest

from bot.cloudflare_api.breaker import CircuitBreaker
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.errors import ProviderUnavailable


def test_opens_after_five_and_tries_once_after_the_cooldown() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=5, cooldown=30.0, clock=lambda: now[0])
    for _ in range(4):
        b.failure()
    assert b.allow()
    b.failure()
    assert not b.allow() and b.retry_in() == 30.0
    now[0] = 29.0
    assert not b.allow()
    now[0] = 30.0
    assert b.allow()  # the trial
    assert not b.allow()  # only one
    b.failure()
    now[0] = 45.0
    assert not b.allow()
    now[0] = 60.0
    assert b.allow()
    b.success()
    assert b.allow() and b.failures == 0


async def test_the_adapter_stops_calling_a_failing_api() -> None:
    lb = CloudflareLoadBalancer("t", "a", "z", base_url="http://127.0.0.1:9/client/v4", timeout=0.2)
    try:
        for _ in range(5):
            with pytest.raises(ProviderUnavailable, match="cannot reach Cloudflare"):
                await lb.pools()
        with pytest.raises(ProviderUnavailable, match=r"failed 5 times in a row.*next try in 30 s"):
            await lb.pools()
    finally:
        await lb.aclose()
