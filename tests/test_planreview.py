"""The plan as Cloudflare will run it: the seed's literal configuration is flagged, the shipped
one's failover chains pass, and each trap says what happens and the fix."""

from __future__ import annotations

from dataclasses import replace

from bot.fleet import Fleet, load_fleet
from bot.lbmodel import LiveView
from bot.plancheck import CheckLine, check_plan
from bot.planned import planned_view
from bot.planreview import review_plan

from .conftest import SEED_LITERAL

SEED = load_fleet(SEED_LITERAL)


def lines(fleet: Fleet, view: LiveView | None = None) -> dict[str, CheckLine]:
    return {ln.item: ln for ln in review_plan(fleet, view or planned_view(fleet))}


def test_the_seed_literal_plan_has_no_failover_for_north_america() -> None:
    found = lines(SEED)
    na = found["failover path of WNAM ENAM NSAM SSAM"]
    assert not na.ok
    assert na.detail == (
        "us-east → fallback us-east: no failover: when it is down, their users get errors"
    )
    assert na.fix is not None and '`WNAM = ["us-east", "eu-west", "apac-sg"]`' in na.fix
    europe = found["failover path of WEU EEU ME NAF SAF"]
    assert not europe.ok and "apac-sg is never used" in europe.detail
    fallback = found["fallback pool"]
    assert not fallback.ok and "also the only pool of WNAM ENAM NSAM SSAM" in fallback.detail


def test_the_shipped_chains_pass(fleet: Fleet) -> None:
    found = lines(fleet)
    assert found["failover path of WNAM ENAM NSAM SSAM"].ok
    assert found["failover path of WNAM ENAM NSAM SSAM"].detail == (
        "us-east → eu-west → apac-sg → fallback us-east"
    )
    assert found["fallback pool"].ok


def test_detection_budget_against_the_rto_target(fleet: Fleet) -> None:
    line = lines(fleet)["detection against the RTO target"]
    assert not line.ok  # the seed's monitor (30 s x 2) cannot meet its own 30 s target
    assert line.detail.startswith("monitor every 30 s × 2 checks + propagation 5 s = about 1m05s")
    assert line.detail.endswith("the RTO target is 30 s")
    assert line.fix is not None and line.fix.startswith("check every 4 s or less")
    fast = fleet.model_copy(update={"monitor": fleet.monitor.model_copy(update={"interval": 4})})
    assert lines(fast)["detection against the RTO target"].ok


def test_monitor_traps(fleet: Fleet) -> None:
    view = planned_view(fleet)
    assert view.monitor is not None
    header = {"Host": ["api.erlvinc.com"], "User-Agent": ["Cloudflare-Health-Check"]}
    pools = dict(view.pools)
    pools["foundation-eu-west"] = replace(pools["foundation-eu-west"], monitor_id=None)
    odd = replace(view, monitor=replace(view.monitor, header=header), pools=pools)
    found = lines(fleet, odd)
    headers = found["monitor headers"]
    assert not headers.ok and "load balancer's own hostname" in headers.detail
    assert "is ignored: Cloudflare's monitor always sends its own" in headers.detail
    monitors = found["monitor on every pool"]
    assert not monitors.ok and "eu-west has no monitor" in monitors.detail


def test_pools_the_load_balancer_does_not_use_are_left_out(fleet: Fleet) -> None:
    view = planned_view(fleet)
    staging = replace(
        view.pools["foundation-eu-west"], id="staging", name="staging", monitor_id=None
    )
    found = lines(fleet, replace(view, pools={**view.pools, "staging": staging}))
    assert found["failover path of WNAM ENAM NSAM SSAM"].ok
    assert found["monitor on every pool"].ok


def test_overrides_and_a_disabled_fallback(fleet: Fleet) -> None:
    view = planned_view(fleet, enabled={"us-east": False})
    view = replace(view, load_balancer=replace(view.load_balancer, country_pools={"GB": ("x",)}))
    found = lines(fleet, view)
    assert not found["steering overrides"].ok
    assert "country_pools for GB" in found["steering overrides"].detail
    assert not found["fallback pool"].ok and "530 (error 1016)" in found["fallback pool"].detail


def with_served_by(fleet: Fleet, rule: dict[str, object]) -> Fleet:
    data = fleet.model_dump()
    data["public"]["served_by"] = rule
    return Fleet.model_validate(data)


def test_a_served_by_rule_that_reads_the_colo_is_flagged(fleet: Fleet) -> None:
    colo = with_served_by(
        fleet, {"json_field": "region", "values": {"IAD": "us-east", "LHR": "eu-west"}}
    )
    line = lines(colo)["which pool served a user"]
    assert not line.ok and "cf.colo" in line.detail and "IAD LHR are data centers" in line.detail
    assert lines(with_served_by(fleet, {"header": "X-Gateway-Region"}))[
        "which pool served a user"
    ].ok


def test_origins_against_the_plan(fleet: Fleet) -> None:
    view = planned_view(fleet)
    pool = view.pools["foundation-eu-west"]
    [origin] = pool.origins
    moved = replace(origin, address="elsewhere.example.com", weight=0.0)
    view = replace(view, pools={**view.pools, pool.id: replace(pool, origins=(moved,))})
    [line] = [ln for ln in check_plan(fleet, view) if ln.item.startswith("pool foundation-eu-west")]
    assert not line.ok
    assert (
        "points at elsewhere.example.com, the plan at foundation-gateway-eu.erlvinc.workers.dev"
        in line.detail
    )
    assert "weight 0: it takes no traffic (plan 1)" in line.detail
