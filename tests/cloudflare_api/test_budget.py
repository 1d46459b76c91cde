"""Cloudflare's rate-limit headers read, the budget kept for restores, and the restores' retry
policy, on a clock moved by hand."""

from __future__ import annotations

import pytest

from bot.cloudflare_api.budget import (
    ApiBudget,
    BudgetExhausted,
    Policy,
    Quota,
    Spend,
    parse_policy,
    parse_ratelimit,
    parse_retry_after,
)
from bot.cloudflare_api.retry import RetryPolicy, retry_restore
from bot.errors import ProviderAuthError, ProviderError, ProviderUnavailable


def test_the_documented_header_examples_are_read() -> None:
    # fundamentals/api/reference/limits: the examples as the page gives them.
    assert parse_ratelimit('"default";r=50;t=30') == [Quota("default", 50, 30.0)]
    assert parse_policy('"burst";q=100;w=60') == [Policy("burst", 100, 60.0)]
    # Lists of items, in any case and spacing; what cannot be read is left out.
    assert parse_ratelimit('"burst";r=7;t=12, "default";r=1100;t=280') == [
        Quota("burst", 7, 12.0),
        Quota("default", 1100, 280.0),
    ]
    assert parse_policy('"burst";q=100;w=60,"default";q=1200;w=300')[1] == Policy(
        "default", 1200, 300.0
    )
    assert parse_ratelimit('"default";t=30') == []
    assert parse_ratelimit('"default";r=lots;t=30') == []
    assert parse_ratelimit(None) == []
    assert parse_policy("") == []
    assert parse_retry_after("300") == 300.0 and parse_retry_after("soon") is None


def budget(now: list[float]) -> ApiBudget:
    return ApiBudget(clock=lambda: now[0])


def test_the_headers_of_each_answer_say_what_is_left() -> None:
    now = [0.0]
    b = budget(now)
    assert b.left() is None and not b.low()  # nothing heard yet
    b.observe(
        200, {"ratelimit": '"default";r=1100;t=280', "ratelimit-policy": '"default";q=1200;w=300'}
    )
    assert (b.left(), b.quota, b.window, b.reserve) == (1100, 1200, 300.0, 120)
    b.observe(200, {"ratelimit": '"default";r=500;t=200,"burst";r=90;t=40'})
    assert b.left() == 90 and b.resets_in() == 40.0  # the tightest limit blocks first
    now[0] = 40.0
    assert b.left() is None  # its window reset: not known until the next answer


def test_below_the_reserve_only_restores_go() -> None:
    now = [0.0]
    b = budget(now)
    b.observe(
        200, {"ratelimit": '"default";r=100;t=30', "ratelimit-policy": '"default";q=1200;w=300'}
    )
    assert b.low()
    b.check(Spend.RESTORE, "enabling pool p")  # not refused
    for spend in (Spend.READ, Spend.CHANGE):
        with pytest.raises(BudgetExhausted) as caught:
            b.check(spend, "reading the pools")
        assert caught.value.retry_in == 30.0
        assert str(caught.value) == (
            "Cloudflare's API budget is nearly spent (100 of 1200 calls left for 30 s), and the "
            "rest is kept for restores; reading the pools did not happen"
        )
    now[0] = 30.0
    b.check(Spend.READ, "reading the pools")  # a new window


def test_a_429_blocks_everything_until_its_retry_after() -> None:
    now = [0.0]
    b = budget(now)
    b.observe(429, {"retry-after": "300", "ratelimit": '"default";r=0;t=300'})
    for spend in Spend:
        with pytest.raises(BudgetExhausted, match=r"blocks the bot's API calls for 300 s more"):
            b.check(spend, "enabling pool p")
    now[0] = 299.0
    with pytest.raises(BudgetExhausted) as caught:
        b.check(Spend.RESTORE, "enabling pool p")
    assert caught.value.retry_in == 1.0
    assert caught.value.reason == "Cloudflare blocks the bot's API calls for 1 s more"
    now[0] = 300.0
    b.check(Spend.RESTORE, "enabling pool p")
    # Until an answer says what is left (or a second has passed), restores go first.
    with pytest.raises(BudgetExhausted, match="has just lifted, and restores go first") as first:
        b.check(Spend.READ, "reading the pools")
    assert first.value.retry_in == 1.0
    b.observe(200, {"ratelimit": '"default";r=1199;t=300'})
    b.check(Spend.READ, "reading the pools")


def test_with_no_restore_waiting_reads_go_a_second_after_the_block() -> None:
    now = [0.0]
    b = budget(now)
    b.observe(429, {"retry-after": "10"})
    now[0] = 11.0
    b.check(Spend.READ, "reading the pools")


def test_a_429_without_retry_after_blocks_for_the_documented_window() -> None:
    now = [0.0]
    b = budget(now)
    b.observe(429, {})
    assert b.blocked_for() == 300.0


async def test_a_restore_is_retried_with_growing_pauses_until_it_lands() -> None:
    slept: list[float] = []
    told: list[tuple[int, float | None]] = []
    answers: list[Exception | None] = [ProviderUnavailable("HTTP 500")] * 5 + [None]

    async def call() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "enabled"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def failed(exc: ProviderError, attempt: int, pause: float | None) -> None:
        told.append((attempt, pause))

    assert await retry_restore(call, RetryPolicy(), on_failure=failed, sleep=sleep) == "enabled"
    assert slept == [0.5, 1.0, 2.0, 4.0, 4.0]  # never the read breaker's 30 s
    assert told == list(zip(range(1, 6), slept, strict=True))


async def test_a_rate_limited_restore_waits_exactly_what_cloudflare_said() -> None:
    slept: list[float] = []
    answers: list[Exception | None] = [BudgetExhausted("blocked", 42.0), None]

    async def call() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "enabled"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    assert await retry_restore(call, sleep=sleep) == "enabled"
    assert slept == [pytest.approx(42.05)]


async def test_a_refusal_is_not_retried_and_a_bounded_policy_gives_up() -> None:
    calls = [0]

    async def refused() -> None:
        calls[0] += 1
        raise ProviderAuthError("the API token lacks Load Balancing: Monitors and Pools Edit")

    async def no_sleep(seconds: float) -> None:
        pass

    with pytest.raises(ProviderAuthError):
        await retry_restore(refused, sleep=no_sleep)
    assert calls == [1]

    async def down() -> None:
        calls[0] += 1
        raise ProviderUnavailable("HTTP 500")

    told: list[float | None] = []

    async def failed(exc: ProviderError, attempt: int, pause: float | None) -> None:
        told.append(pause)

    calls[0] = 0
    with pytest.raises(ProviderUnavailable):
        await retry_restore(
            down, on_failure=failed, give_up=lambda attempt: attempt >= 3, sleep=no_sleep
        )
    assert calls == [3] and told == [0.5, 1.0, None]  # the last one says there is no next
