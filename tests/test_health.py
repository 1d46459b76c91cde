"""Probe classification against the sandbox gateways, one test per failure mode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from bot.fleet import Fleet, MonitorSettings, Origin, load_fleet
from bot.health import Prober, classify
from bot.observations import Outcome, ProbeResult
from bot.sandbox.world import Sandbox


@pytest.fixture
def sandbox_fleet(world: Sandbox) -> Fleet:
    return load_fleet(world.config_path)


@pytest.fixture
async def prober(sandbox_fleet: Fleet) -> AsyncIterator[Prober]:
    # A short timeout keeps the slow case quick; the semantics are the monitor's.
    monitor = sandbox_fleet.monitor.model_copy(update={"timeout": 0.5})
    p = Prober(monitor)
    yield p
    await p.aclose()


async def probe(prober: Prober, fleet: Fleet, region: str) -> ProbeResult:
    return await prober.probe(region, fleet.region(region).origins[0])


async def test_healthy(prober: Prober, sandbox_fleet: Fleet) -> None:
    result = await probe(prober, sandbox_fleet, "eu-west")
    assert result.outcome is Outcome.HEALTHY and result.healthy
    assert result.status_code == 200
    assert result.latency is not None and 0 < result.latency < 0.5
    assert result.attempts == 1


async def test_degraded_names_the_failing_check(
    prober: Prober, sandbox_fleet: Fleet, world: Sandbox
) -> None:
    await world.gateways["eu-west"].set_mode("degraded", check="kv")
    result = await probe(prober, sandbox_fleet, "eu-west")
    assert result.outcome is Outcome.HTTP_STATUS
    assert result.reason == "HTTP 503: kv error"
    assert result.failing_checks == {"kv": "error"}
    assert result.attempts == 3  # retries: 2, re-asked at once


async def test_down_is_refused(prober: Prober, sandbox_fleet: Fleet, world: Sandbox) -> None:
    assert (await probe(prober, sandbox_fleet, "us-east")).healthy  # a pooled connection now exists
    await world.gateways["us-east"].set_mode("down")
    result = await probe(prober, sandbox_fleet, "us-east")
    assert result.outcome is Outcome.REFUSED
    assert result.reason == "connection refused"
    await world.gateways["us-east"].set_mode("healthy")
    assert (await probe(prober, sandbox_fleet, "us-east")).healthy


async def test_erroring(prober: Prober, sandbox_fleet: Fleet, world: Sandbox) -> None:
    await world.gateways["apac-sg"].set_mode("erroring")
    result = await probe(prober, sandbox_fleet, "apac-sg")
    assert (result.outcome, result.status_code) == (Outcome.HTTP_STATUS, 500)
    assert result.reason == "HTTP 500 (body is not JSON)"


async def test_slow_is_a_timeout_after_the_total_deadline(
    prober: Prober, sandbox_fleet: Fleet, world: Sandbox
) -> None:
    await world.gateways["apac-sg"].set_mode("slow", delay=2)
    started = time.perf_counter()
    result = await probe(prober, sandbox_fleet, "apac-sg")
    took = time.perf_counter() - started
    assert result.outcome is Outcome.TIMEOUT
    assert result.reason == "timeout after 0.5 s"
    assert result.attempts == 3
    assert 1.4 < took < 1.9  # three attempts of 0.5 s each


async def test_body_mismatch(prober: Prober, sandbox_fleet: Fleet, world: Sandbox) -> None:
    await world.gateways["eu-west"].set_mode("wrongbody")
    result = await probe(prober, sandbox_fleet, "eu-west")
    assert result.outcome is Outcome.BODY_MISMATCH
    assert result.reason == 'body lacks "status":"healthy" (status \'ok\')'


async def test_bad_json(prober: Prober, sandbox_fleet: Fleet, world: Sandbox) -> None:
    await world.gateways["eu-west"].set_mode("badjson")
    result = await probe(prober, sandbox_fleet, "eu-west")
    assert result.outcome is Outcome.BAD_JSON
    assert result.reason == "bad JSON in an HTTP 200 answer"


async def test_flapping_alternates(prober: Prober, sandbox_fleet: Fleet, world: Sandbox) -> None:
    await world.gateways["eu-west"].set_mode("flapping", period=0.3)
    seen = set()
    for _ in range(8):
        seen.add((await probe(prober, sandbox_fleet, "eu-west")).healthy)
        time.sleep(0.1)  # noqa: ASYNC251 - spacing probes; nothing else runs meanwhile
    assert seen == {True, False}


async def test_all_origins_are_probed_concurrently(
    prober: Prober, sandbox_fleet: Fleet, world: Sandbox
) -> None:
    for gateway in world.gateways.values():
        await gateway.set_mode("slow", delay=0.3)
    started = time.perf_counter()
    results = await prober.probe_all(sandbox_fleet.origins)
    assert [r.healthy for r in results] == [True, True, True]
    assert time.perf_counter() - started < 0.8  # one at a time would take 0.9 s


async def test_budget_marks_unanswered(
    prober: Prober, sandbox_fleet: Fleet, world: Sandbox
) -> None:
    await world.gateways["apac-sg"].set_mode("slow", delay=3)
    results = await prober.probe_all(sandbox_fleet.origins, budget=0.3)
    by_region = {r.region: r for r in results}
    assert by_region["us-east"].healthy
    assert by_region["apac-sg"].outcome is Outcome.NO_ANSWER
    assert by_region["apac-sg"].reason == "no answer within 0.3 s"
    assert not by_region["apac-sg"].answered


async def test_unresolvable_host_is_a_connection_error() -> None:
    monitor = MonitorSettings(timeout=1.0, retries=0)
    origin = Origin(name="nowhere", url="http://nowhere.invalid")
    prober = Prober(monitor)
    try:
        result = await prober.probe("x", origin)
    finally:
        await prober.aclose()
    assert result.outcome is Outcome.CONNECTION_ERROR
    assert result.reason.startswith("cannot connect")


def test_classify_healthy_needs_code_and_body() -> None:
    m = MonitorSettings()
    ok = b'{"status":"healthy","checks":{"d1":"ok"}}'
    assert classify(m, 200, ok)[0] is Outcome.HEALTHY
    assert classify(m, 201, ok)[1] == "HTTP 201"
    degraded = b'{"status":"degraded","checks":{"d1":"error","kv":"ok","services":"degraded"}}'
    assert classify(m, 503, degraded)[1] == "HTTP 503: d1 error, services degraded"
    assert classify(m, 200, degraded)[1] == (
        'body lacks "status":"healthy" (status \'degraded\'): d1 error, services degraded'
    )
    # Spaces after the colon defeat Cloudflare's substring match too.
    assert classify(m, 200, b'{"status": "healthy"}')[0] is Outcome.BODY_MISMATCH
