"""The monitor: hysteresis, the events of DESIGN.md, and a state that survives a new leader."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.fleet import Fleet, load_fleet
from bot.monitor import Event, EventKind, Monitor, MonitorState, PoolState, Severity, pool_state
from bot.observations import Outcome, ProbeResult
from bot.planned import planned_view
from bot.routing import routing_table

from .conftest import SEED_LITERAL

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


@pytest.fixture
def seed() -> Fleet:
    return load_fleet(SEED_LITERAL)


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
    two = replace(region, origins=[*region.origins, replace(region.origins[0], name="gw-2")])
    m = warmed(fleet.model_copy(update={"regions": {**fleet.regions, "us-east": two}}))
    other = ProbeResult("us-east", "gw-2", "http://y", Outcome.HEALTHY, "HTTP 200", at(2))
    m.observe(other, at(2)), m.observe(replace(other, at=at(3)), at(3))
    m.observe(probe("us-east", False, 10), at(10))
    [degraded] = m.observe(probe("us-east", False, 11), at(11))
    assert degraded.kind is EventKind.POOL_DEGRADED and degraded.severity is Severity.WARNING


def read(
    m: Monitor, t: float, enabled: dict[str, bool] | None = None, **healthy: bool | None
) -> list[Event]:
    """One Cloudflare read at ``t`` with the given pool health (default healthy)."""
    state = {"us-east": True, "eu-west": True, "apac-sg": True} | {
        k.replace("_", "-"): v for k, v in healthy.items()
    }
    v = planned_view(m.fleet, state, enabled)
    return m.observe_cloudflare(v, routing_table(v.load_balancer, v.pools), at(t))


def down(m: Monitor, region: str, t: float, reason: str = "HTTP 503: d1 error") -> None:
    m.observe(probe(region, False, t, reason), at(t))
    m.observe(probe(region, False, t + 1, reason), at(t + 1))


def up(m: Monitor, region: str, t: float) -> None:
    m.observe(probe(region, True, t), at(t))
    m.observe(probe(region, True, t + 1), at(t + 1))


def kinds(events: list[Event]) -> list[EventKind]:
    return [e.kind for e in events]


def grays(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind is EventKind.GRAY_FAILURE]


def test_failover_and_traffic_restored_from_cloudflare(fleet: Fleet) -> None:
    m = warmed(fleet)
    assert read(m, 5) == []
    down(m, "us-east", 10)
    [failover] = read(m, 20, us_east=False)
    assert failover.kind is EventKind.FAILOVER_TRIGGERED and failover.source == "cloudflare"
    assert (failover.region, failover.to_region, failover.geos) == (
        "us-east",
        "eu-west",
        ("WNAM", "ENAM", "NSAM", "SSAM"),
    )
    assert failover.evidence == "Cloudflare sends WNAM ENAM NSAM SSAM to eu-west"
    assert failover.severity is Severity.WARNING
    assert read(m, 35, us_east=False) == []  # no repeat
    up(m, "us-east", 40)
    [restored] = read(m, 50)
    assert restored.kind is EventKind.TRAFFIC_RESTORED
    assert restored.geos == ("WNAM", "ENAM", "NSAM", "SSAM")


def test_seed_literal_us_east_outage_is_no_failover_and_exceeds_the_rto(seed: Fleet) -> None:
    m = warmed(seed)
    down(m, "us-east", 10)
    [stranded] = read(m, 20, us_east=False)
    assert stranded.kind is EventKind.NO_HEALTHY_POOL
    assert stranded.severity is Severity.CRITICAL and stranded.to_region == "us-east"
    assert "failed over" not in stranded.evidence
    assert stranded.evidence == (
        "WNAM ENAM NSAM SSAM have no healthy pool: Cloudflare sends them to the fallback "
        "us-east, which is unhealthy, so users get errors (no failover: us-east is their own "
        "pool)"
    )
    assert m.state.failed_over == {}
    assert set(m.state.stranded) == {"WNAM", "ENAM", "NSAM", "SSAM"}
    assert m.tick(at(69)) == []
    [rto] = m.tick(at(70))  # 60 s since the first failed probe
    assert rto.kind is EventKind.RTO_EXCEEDED and rto.severity is Severity.CRITICAL
    assert (rto.region, rto.began_at) == ("us-east", at(10))
    assert rto.geos == ("WNAM", "ENAM", "NSAM", "SSAM")
    assert "fallback us-east, which is unhealthy" in rto.evidence
    assert m.tick(at(200)) == []  # said once


def test_seed_literal_eu_west_outage_goes_to_the_healthy_fallback(seed: Fleet) -> None:
    m = warmed(seed)
    down(m, "eu-west", 10)
    [moved] = read(m, 20, eu_west=False)
    assert moved.kind is EventKind.FAILOVER_TRIGGERED
    assert (
        moved.to_region == "us-east" and "the fallback us-east, which is healthy" in moved.evidence
    )
    assert m.tick(at(200)) == []  # served by the fallback: no RTO Exceeded


def test_moving_on_from_one_destination_to_another_is_said(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "us-east", 10)
    read(m, 20, us_east=False)
    down(m, "eu-west", 30)
    events = read(m, 40, us_east=False, eu_west=False)
    moves = {(e.region, e.to_region) for e in events}
    assert moves == {("us-east", "apac-sg"), ("eu-west", "apac-sg")}


def test_the_fallback_marked_unhealthy_but_passing_the_probes_serves(seed: Fleet) -> None:
    # us-east was just re-enabled (unknown to Cloudflare) when eu-west went down: Cloudflare sends
    # Europe to it anyway, and its origins answer the probes: users are served, not stranded.
    m = warmed(seed)
    down(m, "eu-west", 10)
    [moved] = [e for e in read(m, 20, us_east=None, eu_west=False) if e.region == "eu-west"]
    assert moved.kind is EventKind.FAILOVER_TRIGGERED and moved.to_region == "us-east"
    assert "marked unhealthy, but the probes pass" in moved.evidence
    assert "WEU" not in m.state.stranded
    down(m, "us-east", 30)  # now its origins fail too: the same route strands them
    m.tick(at(33))
    assert "which is unhealthy, so users get errors" in m.state.stranded["WEU"]


def test_rto_counts_from_the_geo_regions_own_outage(seed: Fleet) -> None:
    m = warmed(seed)
    down(m, "us-east", 10)  # the fallback, down for a long time
    read(m, 20, us_east=False)
    down(m, "eu-west", 600)
    read(m, 605, us_east=False, eu_west=False)
    rto = [e for e in m.tick(at(640)) if e.region == "eu-west"]
    assert rto == []  # 40 s into eu-west's outage, not 630 s into us-east's
    [late] = [e for e in m.tick(at(661)) if e.region == "eu-west"]
    assert late.kind is EventKind.RTO_EXCEEDED and late.began_at == at(600)


def test_a_disabled_fallback_means_530(seed: Fleet) -> None:
    m = warmed(seed)
    [e] = read(m, 5, enabled={"us-east": False})
    assert e.kind is EventKind.NO_HEALTHY_POOL and "Cloudflare's 530 (error 1016)" in e.evidence
    assert m.state.stranded["WNAM"] == (
        "the fallback us-east is disabled, so users get Cloudflare's 530 (error 1016)"
    )


def test_rto_exceeded_when_nothing_healthy_serves_the_region(fleet: Fleet) -> None:
    m = warmed(fleet)
    for region in ("us-east", "eu-west", "apac-sg"):
        down(m, region, 10)
    read(m, 15, us_east=False, eu_west=False, apac_sg=False)  # all on the fallback
    assert m.tick(at(69)) == []
    rto = m.tick(at(70))
    assert {e.region for e in rto} == {"us-east", "eu-west", "apac-sg"}
    assert all(e.kind is EventKind.RTO_EXCEEDED and e.began_at == at(10) for e in rto)
    assert m.tick(at(200)) == []


def test_no_rto_alert_once_traffic_is_served_elsewhere(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "us-east", 10)
    read(m, 25, us_east=False)
    assert m.state.unserved_since == {}
    assert m.tick(at(120)) == []


def test_rto_exceeded_while_cloudflare_still_sends_users_to_a_dead_pool(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "us-east", 10)
    read(m, 15)  # Cloudflare still marks us-east healthy
    [rto] = [e for e in m.tick(at(70)) if e.kind is EventKind.RTO_EXCEEDED]
    assert "still sends them to us-east, which the probes find down" in rto.evidence


def test_without_cloudflare_the_plan_says_who_is_stranded(fleet: Fleet) -> None:
    m = warmed(fleet)  # no Cloudflare read ever
    down(m, "us-east", 10)
    assert m.tick(at(120)) == []  # the plan fails WNAM over to eu-west
    down(m, "eu-west", 130)
    down(m, "apac-sg", 130)
    assert {e.region for e in m.tick(at(200))} == {"us-east", "eu-west", "apac-sg"}


# Cloudflare's detection budget in failover.toml: every 30 s x 2 checks + 5 s propagation = 65 s;
# then the bot reads Cloudflare every 15 s: 81 s in all before a disagreement is a gray failure.


def test_gray_failure_only_after_cloudflares_detection_budget_and_said_once(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "eu-west", 10)
    assert read(m, 12) == []  # Cloudflare may simply not have noticed yet
    assert read(m, 60) == [] and grays(m.tick(at(80))) == []
    [gray] = grays(m.tick(at(93)))
    assert gray.kind is EventKind.GRAY_FAILURE and gray.region == "eu-west"
    assert gray.began_at == at(12)
    assert (
        "the bot's probes fail" in gray.evidence and "Cloudflare marks it healthy" in gray.evidence
    )
    assert read(m, 100) == [] and grays(m.tick(at(200))) == []


def test_a_plain_outage_and_recovery_are_never_gray(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "apac-sg", 10)
    assert kinds(read(m, 12)) == []
    assert kinds(read(m, 70, apac_sg=False)) == [EventKind.FAILOVER_TRIGGERED]  # 59 s later
    up(m, "apac-sg", 100)
    assert m.tick(at(150)) == []  # Cloudflare still marks it unhealthy: noticing the recovery
    assert kinds(read(m, 170)) == [EventKind.TRAFFIC_RESTORED]
    assert m.tick(at(400)) == []


def test_timeouts_give_cloudflare_its_retries(fleet: Fleet) -> None:
    m = warmed(fleet)
    down(m, "eu-west", 10, reason="timeout after 5 s")
    m.state.pools["eu-west"].origins["gateway-eu-west"].timed_out = True
    read(m, 12)
    assert grays(m.tick(at(105))) == []  # 81 s + (1 + 2 retries) x 5 s
    assert len(grays(m.tick(at(109)))) == 1


def test_drained_origins_and_unchecked_pools_are_not_gray(fleet: Fleet) -> None:
    m = warmed(fleet)
    v = planned_view(fleet, {"eu-west": False})
    pool = v.pools["foundation-eu-west"]
    drained = replace(pool, origins=tuple(replace(o, enabled=False) for o in pool.origins))
    v = replace(v, pools={**v.pools, pool.id: drained})
    m.observe_cloudflare(v, routing_table(v.load_balancer, v.pools), at(5))
    assert m.tick(at(500)) == []  # Cloudflare is right: its only origin is drained
    read(m, 510, eu_west=None)  # re-enabled, not checked yet
    assert m.tick(at(900)) == []


def test_state_survives_a_new_leader(fleet: Fleet) -> None:
    m = warmed(fleet)
    m.observe(probe("eu-west", False, 10), at(10))
    stored = m.state.model_dump_json()
    successor = Monitor(fleet, MonitorState.model_validate_json(stored))
    [down] = successor.observe(probe("eu-west", False, 11), at(11))
    assert down.kind is EventKind.POOL_DOWN and down.began_at == at(10)
