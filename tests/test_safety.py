"""Safety rules: each with its reason, and no sequence of allowed drains strands a geo region."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.fleet import Fleet, load_fleet
from bot.lbmodel import LiveView
from bot.planned import planned_view
from bot.routing import routing_table
from bot.safety import InFlight, Proposal, Rule, after_change, assess

from .conftest import CONFIG, SEED_LITERAL

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
FLEET = load_fleet(CONFIG)


def drain(region: str, origin: str | None = None) -> Proposal:
    return Proposal("drain", region, origin)


def test_blast_radius_of_draining_eu_west(fleet: Fleet) -> None:
    a = assess(drain("eu-west"), fleet, planned_view(fleet), [], NOW)
    assert a.allowed and not a.needs_approval
    moved = {r.geo: (r.now, r.after) for r in a.blast if r.moves}
    assert moved == dict.fromkeys(("WEU", "EEU", "ME", "NAF", "SAF"), ("eu-west", "us-east"))
    assert all(r.after_healthy for r in a.blast)


def test_refused_when_it_strands_a_region(fleet: Fleet) -> None:
    view = planned_view(fleet, healthy={"us-east": False, "apac-sg": False})
    a = assess(drain("eu-west"), fleet, view, [], NOW)
    assert not a.allowed
    [refusal] = a.refusals
    assert refusal.rule is Rule.NO_HEALTHY_POOL
    assert (
        refusal.text.startswith("WNAM ENAM NSAM SSAM WEU")
        and "without a healthy enabled pool" in refusal.text
    )


def test_fallback_pool_needs_approval_and_another_pool_everywhere(fleet: Fleet) -> None:
    ok = assess(drain("us-east"), fleet, planned_view(fleet), [], NOW)
    assert ok.allowed and ok.needs_approval
    view = planned_view(fleet, healthy={"eu-west": False, "apac-sg": False})
    refused = assess(drain("us-east"), fleet, view, [], NOW)
    assert {r.rule for r in refused.refusals} == {Rule.NO_HEALTHY_POOL, Rule.FALLBACK_POOL}


def test_drill_running_and_settling_changes_block(fleet: Fleet) -> None:
    drill = InFlight("drill", "apac-sg", NOW - timedelta(minutes=5))
    assert [
        r.rule for r in assess(drain("eu-west"), fleet, planned_view(fleet), [drill], NOW).refusals
    ] == [Rule.DRILL_RUNNING]
    applying = InFlight("drain", "apac-sg", None)
    assert [
        r.rule
        for r in assess(drain("eu-west"), fleet, planned_view(fleet), [applying], NOW).refusals
    ] == [Rule.IN_FLIGHT]
    settling = InFlight("drain", "apac-sg", NOW - timedelta(seconds=20), id=7)
    [r] = assess(drain("eu-west"), fleet, planned_view(fleet), [settling], NOW).refusals
    # The operation by its number, and when the rule will allow it.
    assert r.rule is Rule.IN_FLIGHT and r.retry_after == 41
    assert r.text == "the drain #7 of apac-sg is still settling: retry after 41 s"
    restoring = InFlight("drain", "apac-sg", None, id=7, doing="restored")
    [r] = assess(drain("eu-west"), fleet, planned_view(fleet), [restoring], NOW).refusals
    assert "drain #7 of apac-sg is being restored" in r.text and "retry after about" in r.text


def test_settled_drains_do_not_block_another_region(fleet: Fleet) -> None:
    settled = InFlight("drain", "apac-sg", NOW - timedelta(minutes=10))
    view = planned_view(fleet, enabled={"apac-sg": False})
    assert assess(drain("eu-west"), fleet, view, [settled], NOW).allowed


def test_same_pool_twice_within_settle(fleet: Fleet) -> None:
    restored = InFlight("drain", "eu-west", NOW - timedelta(seconds=30), finished=True, id=3)
    [r] = assess(drain("eu-west"), fleet, planned_view(fleet), [restored], NOW).refusals
    assert r.rule is Rule.TOO_SOON and r.retry_after == 31
    assert r.text == "eu-west changed 30 s ago (drain #3): retry after 31 s"


def test_break_glass_overrides_the_named_rule_only(fleet: Fleet) -> None:
    view = planned_view(fleet, healthy={"us-east": False, "apac-sg": False})
    a = assess(drain("eu-west"), fleet, view, [], NOW, break_glass={Rule.NO_HEALTHY_POOL})
    assert a.allowed and [r.rule for r in a.overridden] == [Rule.NO_HEALTHY_POOL]
    b = assess(drain("us-east"), fleet, planned_view(fleet), [], NOW, break_glass=set(Rule))
    assert b.needs_approval  # never overridden


def test_draining_a_drained_region_is_a_clear_noop(fleet: Fleet) -> None:
    a = assess(drain("eu-west"), fleet, planned_view(fleet, enabled={"eu-west": False}), [], NOW)
    assert (
        not a.allowed
        and a.noop
        == "eu-west is already drained (pool foundation-eu-west is disabled): nothing to do."
    )


def test_one_origin_of_a_one_origin_pool_is_the_pool(fleet: Fleet) -> None:
    view = planned_view(fleet, healthy={"us-east": False, "apac-sg": False})
    a = assess(drain("eu-west", "gateway-eu-west"), fleet, view, [], NOW)
    assert [r.rule for r in a.refusals] == [Rule.NO_HEALTHY_POOL]


def stranded(view: LiveView) -> list[str]:
    return [g for g, r in routing_table(view.load_balancer, view.pools).items() if not r.healthy]


SEED = load_fleet(SEED_LITERAL)


def test_seed_literal_draining_the_fallback_would_give_its_regions_a_530() -> None:
    a = assess(drain("us-east"), SEED, planned_view(SEED), [], NOW)
    assert {r.rule for r in a.refusals} == {Rule.NO_HEALTHY_POOL, Rule.FALLBACK_POOL}
    [no_pool] = [r for r in a.refusals if r.rule is Rule.NO_HEALTHY_POOL]
    assert no_pool.text == (
        "WNAM ENAM NSAM SSAM would be left without a healthy enabled pool: the fallback us-east "
        "is disabled, so users get Cloudflare's 530 (error 1016)"
    )


def test_seed_literal_draining_eu_west_sends_europe_to_the_healthy_fallback() -> None:
    a = assess(drain("eu-west"), SEED, planned_view(SEED), [], NOW)
    assert a.allowed
    assert {r.after for r in a.blast if r.moves} == {"us-east"}


def test_seed_literal_refused_when_the_fallback_is_unhealthy() -> None:
    view = planned_view(SEED, healthy={"us-east": False})
    a = assess(drain("eu-west"), SEED, view, [], NOW)
    [r] = a.refusals
    assert r.text.startswith("WEU EEU ME NAF SAF would be left without a healthy enabled pool")
    assert "the fallback us-east, which it marks unhealthy" in r.text


def test_a_change_that_makes_it_worse_on_the_same_pool_is_refused() -> None:
    # us-east is down: North America gets what its origins answer. Disabling it (break glass on
    # the fallback rule) would give them Cloudflare's 530: worse, though they stay on us-east.
    view = planned_view(SEED, healthy={"us-east": False})
    a = assess(drain("us-east"), SEED, view, [], NOW, break_glass={Rule.FALLBACK_POOL})
    [r] = a.refusals
    assert r.rule is Rule.NO_HEALTHY_POOL and r.text.startswith("WNAM ENAM NSAM SSAM")
    assert [row.geo for row in a.blast if row.moves and row.now == row.after][:1] == ["WNAM"]


def test_regions_already_stranded_and_untouched_do_not_block_a_change() -> None:
    # us-east is down, its geo regions are on the fallback (itself); apac-sg's drain sends OC SAS
    # SEAS NEAS to the fallback too, so it is refused, for them only.
    view = planned_view(SEED, healthy={"us-east": False})
    [r] = assess(drain("apac-sg"), SEED, view, [], NOW).refusals
    assert r.text.startswith("OC SAS SEAS NEAS would be")
    assert "WNAM" not in r.text


@settings(max_examples=300, deadline=None)
@given(
    fleet=st.sampled_from([FLEET, SEED]),
    healthy=st.fixed_dictionaries({r: st.booleans() for r in FLEET.regions}),
    steps=st.lists(st.tuples(st.sampled_from(list(FLEET.regions)), st.booleans()), max_size=8),
)
def test_no_sequence_of_allowed_drains_strands_a_geo_region(
    fleet: Fleet, healthy: dict[str, bool], steps: list[tuple[str, bool]]
) -> None:
    view = planned_view(fleet, healthy=healthy)
    for region, by_origin in steps:
        pool = view.pool_by_name(fleet.regions[region].pool)
        assert pool is not None
        origin = fleet.regions[region].origins[0].name if by_origin else None
        a = assess(drain(region, origin), fleet, view, [], NOW)
        if a.allowed:
            before = set(stranded(view))
            view = replace(view, pools=after_change(view, pool, origin))
            # An allowed drain never takes a healthy pool away from a geo region that had one.
            assert set(stranded(view)) <= before, (region, origin)
