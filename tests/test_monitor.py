"""The monitor: hysteresis, the events of DESIGN.md, and a state that survives a new leader."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot.fleet import Fleet
from bot.monitor import EventKind, Monitor, MonitorState, PoolState, Severity, pool_state
from bot.observations import Outcome, ProbeResult
from bot.routing import routing_table

from .conftest import make_view

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def probe(region: str, ok: bool, t: float, reason: str = "HTTP 503: d1 error") -> ProbeResult:
    outcome = Outcome.HEALTHY if ok else Outcome.HTTP_STATUS
    checks = {} if ok else {"d1": "error"}
    return ProbeResult(
        region,
        f"gateway-{region}",
        "http://x",
        outcome,
        "HTTP 200" if ok else reason,
        at(t),
        failing_checks=checks,
    )


def warmed(fleet: Fleet) -> Monitor:
    m = Monitor(fleet)
    for region in fleet.regions:
        for t in (0, 1):
            assert m.observe(probe(region, True, t), at(t)) == []  # unknown -> healthy is silent
    return m


def test_pool_states_of_one_round() -> None:
    def r(outcome: Outcome) -> ProbeResult:
        return ProbeResult("r", "o", "http://o", outcome, str(outcome), T0)

    h, d, n = Outcome.HEALTHY, Outcome.REFUSED, Outcome.NO_ANSWER
    assert pool_state([r(h), r(h)]) is PoolState.HEALTHY
    assert pool_state([r(h), r(d)]) is PoolState.DEGRADED
    assert pool_state([r(d), r(d)]) is PoolState.DOWN
    assert pool_state([r(h), r(n)]) is PoolState.UNKNOWN
    assert pool_state([]) is PoolState.UNKNOWN


def test_down_needs_two_failures_and_recovery_two_passes(fleet: Fleet) -> None:
    m = warmed(fleet)
    assert m.observe(probe("eu-west", False, 10), at(10)) == []
    assert m.pending_confirmation("eu-west", "gateway-eu-west")
    [down] = m.observe(probe("eu-west", False, 11), at(11))
    assert (down.kind, down.region, down.severity) == (
        EventKind.POOL_DOWN,
        "eu-west",
        Severity.CRITICAL,
    )
    assert down.began_at == at(10) and down.at == at(11)
    assert down.evidence == "gateway-eu-west: d1 error"
    assert m.observe(probe("eu-west", True, 20), at(20)) == []
    [back] = m.observe(probe("eu-west", True, 21), at(21))
    assert back.kind is EventKind.RECOVERED and back.severity is Severity.INFO


def test_a_single_blip_raises_nothing(fleet: Fleet) -> None:
    m = warmed(fleet)
    assert m.observe(probe("us-east", False, 10), at(10)) == []
    assert m.observe(probe("us-east", True, 11), at(11)) == []
    assert m.observe(probe("us-east", False, 12), at(12)) == []  # the streak started over
    assert m.states()["us-east"] is PoolState.HEALTHY


def test_unanswered_probes_say_nothing(fleet: Fleet) -> None:
    m = warmed(fleet)
    late = ProbeResult(
        "us-east", "gateway-us-east", "http://x", Outcome.NO_ANSWER, "no answer", at(5)
    )
    assert m.observe(late, at(5)) == [] and m.observe(late, at(6)) == []


def test_degraded_pool_of_two_origins(fleet: Fleet) -> None:
    region = fleet.regions["us-east"]
    two = region.model_copy(
        update={"origins": [*region.origins, region.origins[0].model_copy(update={"name": "gw-2"})]}
    )
    m = warmed(fleet.model_copy(update={"regions": {**fleet.regions, "us-east": two}}))
    other = ProbeResult("us-east", "gw-2", "http://y", Outcome.HEALTHY, "HTTP 200", at(2))
    m.observe(other, at(2)), m.observe(replace(other, at=at(3)), at(3))
    m.observe(probe("us-east", False, 10), at(10))
    [degraded] = m.observe(probe("us-east", False, 11), at(11))
    assert degraded.kind is EventKind.POOL_DEGRADED and degraded.severity is Severity.WARNING


def read(m: Monitor, fleet: Fleet, t: float, **healthy: bool) -> list:  # type: ignore[type-arg]
    state = {"us-east": True, "eu-west": True, "apac-sg": True} | {
        k.replace("_", "-"): v for k, v in healthy.items()
    }
    v = make_view(fleet, state)  # type: ignore[arg-type]
    return m.observe_cloudflare(v, routing_table(v.load_balancer, v.pools), at(t))


def test_failover_and_traffic_restored_from_cloudflare(fleet: Fleet) -> None:
    m = warmed(fleet)
    assert read(m, fleet, 5) == []
    m.observe(probe("us-east", False, 10), at(10))
    m.observe(probe("us-east", False, 11), at(11))
    [failover] = read(m, fleet, 20, us_east=False)
    assert failover.kind is EventKind.FAILOVER_TRIGGERED and failover.source == "cloudflare"
    assert (failover.region, failover.to_region, failover.geos) == (
        "us-east",
        "eu-west",
        ("WNAM", "ENAM", "NSAM", "SSAM"),
    )
    assert read(m, fleet, 35, us_east=False) == []  # no repeat
    m.observe(probe("us-east", True, 40), at(40))
    m.observe(probe("us-east", True, 41), at(41))
    [restored] = read(m, fleet, 50)
    assert restored.kind is EventKind.TRAFFIC_RESTORED and restored.geos == (
        "WNAM",
        "ENAM",
        "NSAM",
        "SSAM",
    )


def test_gray_failure_needs_two_reads_and_is_said_once(fleet: Fleet) -> None:
    m = warmed(fleet)
    m.observe(probe("eu-west", False, 10), at(10))
    m.observe(probe("eu-west", False, 11), at(11))
    assert read(m, fleet, 12) == []  # Cloudflare may simply not have noticed yet
    [gray] = read(m, fleet, 27)
    assert gray.kind is EventKind.GRAY_FAILURE and gray.region == "eu-west"
    assert (
        "the bot's probes fail" in gray.evidence and "Cloudflare marks it healthy" in gray.evidence
    )
    assert read(m, fleet, 42) == []


def test_rto_exceeded_when_nothing_healthy_serves_the_region(fleet: Fleet) -> None:
    m = warmed(fleet)
    m.observe(probe("us-east", False, 10), at(10))
    m.observe(probe("us-east", False, 11), at(11))
    for region in ("eu-west", "apac-sg"):
        m.observe(probe(region, False, 10), at(10))
        m.observe(probe(region, False, 11), at(11))
    read(m, fleet, 15, us_east=False, eu_west=False, apac_sg=False)  # all on the fallback
    assert m.tick(at(69)) == []
    [rto] = [e for e in m.tick(at(70)) if e.region == "us-east"]
    assert rto.kind is EventKind.RTO_EXCEEDED and rto.severity is Severity.CRITICAL
    assert rto.began_at == at(10)
    assert [e for e in m.tick(at(200)) if e.region == "us-east"] == []


def test_no_rto_alert_once_traffic_is_served_elsewhere(fleet: Fleet) -> None:
    m = warmed(fleet)
    m.observe(probe("us-east", False, 10), at(10))
    m.observe(probe("us-east", False, 11), at(11))
    read(m, fleet, 25, us_east=False)
    assert m.state.pools["us-east"].served_elsewhere_at == at(25)
    assert m.tick(at(120)) == []


def test_state_survives_a_new_leader(fleet: Fleet) -> None:
    m = warmed(fleet)
    m.observe(probe("eu-west", False, 10), at(10))
    stored = m.state.model_dump_json()
    successor = Monitor(fleet, MonitorState.model_validate_json(stored))
    [down] = successor.observe(probe("eu-west", False, 11), at(11))
    assert down.kind is EventKind.POOL_DOWN and down.began_at == at(10)
