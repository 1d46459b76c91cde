"""The routing table: Cloudflare's rules, and properties that hold for any configuration."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.balancer import LoadBalancerInfo, PoolInfo
from bot.fleet import GEO_REGIONS
from bot.routing import Via, route, routing_table

US, EU, AP = "us", "eu", "ap"
SEED = LoadBalancerInfo(
    id="lb",
    name="api.erlvinc.com",
    steering_policy="geo",
    default_pools=(US, EU, AP),
    fallback_pool=US,
    region_pools={
        **dict.fromkeys(("WNAM", "ENAM", "NSAM", "SSAM"), (US,)),
        **dict.fromkeys(("WEU", "EEU", "ME", "NAF", "SAF"), (EU,)),
        **dict.fromkeys(("OC", "SAS", "SEAS", "NEAS"), (AP,)),
    },
)


def pools(**state: tuple[bool, bool]) -> dict[str, PoolInfo]:
    """pool id -> (enabled, healthy)."""
    return {pid: PoolInfo(id=pid, name=pid, enabled=e, healthy=h) for pid, (e, h) in state.items()}


ALL_UP = pools(us=(True, True), eu=(True, True), ap=(True, True))


def test_all_healthy_each_geo_gets_its_own_pool() -> None:
    table = routing_table(SEED, ALL_UP)
    assert list(table) == list(GEO_REGIONS)
    assert {g for g, r in table.items() if r.pool_id == EU} == {"WEU", "EEU", "ME", "NAF", "SAF"}
    assert not any(r.failed_over for r in table.values())


def test_single_region_outage_goes_to_the_default_order() -> None:
    table = routing_table(SEED, pools(us=(True, False), eu=(True, True), ap=(True, True)))
    assert table["WNAM"].pool_id == EU and table["WNAM"].via is Via.DEFAULT_POOLS
    assert table["WNAM"].failed_over and table["WNAM"].preferred == US
    assert table["SEAS"].pool_id == AP and not table["SEAS"].failed_over


def test_disabled_pool_gets_no_traffic_even_when_healthy() -> None:
    table = routing_table(SEED, pools(us=(True, True), eu=(False, True), ap=(True, True)))
    assert table["WEU"].pool_id == US


def test_multi_region_outage_then_all_down() -> None:
    two_down = routing_table(SEED, pools(us=(True, False), eu=(True, False), ap=(True, True)))
    assert {r.pool_id for r in two_down.values()} == {AP}
    all_down = routing_table(SEED, pools(us=(True, False), eu=(True, False), ap=(True, False)))
    assert {(r.pool_id, r.via) for r in all_down.values()} == {(US, Via.FALLBACK)}
    assert not any(r.healthy for r in all_down.values())


def test_unknown_health_counts_as_serving() -> None:
    # A pool with no monitor has no health; Cloudflare sends it traffic.
    table = routing_table(SEED, pools(us=(True, None), eu=(True, True), ap=(True, True)))  # type: ignore[arg-type]
    assert table["WNAM"].pool_id == US


ids = st.sampled_from(["p0", "p1", "p2", "p3"])


@st.composite
def configurations(draw: st.DrawFn) -> tuple[LoadBalancerInfo, dict[str, PoolInfo]]:
    lb = LoadBalancerInfo(
        id="lb",
        name="x",
        steering_policy=draw(st.sampled_from(["geo", "off"])),
        default_pools=tuple(draw(st.lists(ids, min_size=1, max_size=4, unique=True))),
        fallback_pool=draw(ids),
        region_pools=draw(
            st.dictionaries(
                st.sampled_from(GEO_REGIONS), st.lists(ids, max_size=3, unique=True).map(tuple)
            )
        ),
    )
    state = {
        pid: PoolInfo(id=pid, name=pid, enabled=draw(st.booleans()), healthy=draw(st.booleans()))
        for pid in ("p0", "p1", "p2", "p3")
    }
    return lb, state


@given(configurations())
def test_properties_of_every_route(config: tuple[LoadBalancerInfo, dict[str, PoolInfo]]) -> None:
    lb, state = config
    for geo, r in routing_table(lb, state).items():
        own = lb.region_pools.get(geo, ()) if lb.steering_policy == "geo" else ()
        serving = [p for p in (*own, *lb.default_pools) if state[p].serving]
        if serving:
            # The first healthy enabled pool, region pools before default pools.
            assert r.pool_id == serving[0] and r.healthy
            assert r.via is (Via.REGION_POOLS if serving[0] in own else Via.DEFAULT_POOLS)
            assert state[r.pool_id].enabled and state[r.pool_id].healthy
        else:
            # No healthy enabled pool: the fallback, whatever its health.
            assert r.pool_id == lb.fallback_pool and r.via is Via.FALLBACK and not r.healthy
        assert r == route(geo, lb, state)
