"""The routing table: Cloudflare's documented rules, named cases, and properties for any config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.cloudflare_api.convert import lb_from_json
from bot.fleet import GEO_REGIONS
from bot.lbmodel import LoadBalancerInfo, PoolInfo
from bot.routing import (
    Route,
    Users,
    Via,
    effective_policy,
    pool_serving,
    route,
    routing_notes,
    routing_table,
)

US, EU, AP = "us", "eu", "ap"
NA = ("WNAM", "ENAM", "NSAM", "SSAM")
EUROPE = ("WEU", "EEU", "ME", "NAF", "SAF")
ASIA = ("OC", "SAS", "SEAS", "NEAS")
# The seed's load balancer as written: one pool per geo region, us-east also the fallback.
SEED = LoadBalancerInfo(
    id="lb",
    name="api.erlvinc.com",
    steering_policy="geo",
    default_pools=(US, EU, AP),
    fallback_pool=US,
    region_pools={
        **dict.fromkeys(NA, (US,)),
        **dict.fromkeys(EUROPE, (EU,)),
        **dict.fromkeys(ASIA, (AP,)),
    },
)
# The same intent with each geo region's whole failover chain listed (the shipped failover.toml).
CHAINS = LoadBalancerInfo(
    id="lb",
    name="api.erlvinc.com",
    steering_policy="geo",
    default_pools=(US, EU, AP),
    fallback_pool=US,
    region_pools={
        **dict.fromkeys(NA, (US, EU, AP)),
        **dict.fromkeys(EUROPE, (EU, US, AP)),
        **dict.fromkeys(ASIA, (AP, US, EU)),
    },
)
UP, DOWN, OFF, UNKNOWN = (True, True), (True, False), (False, None), (True, None)


Health = tuple[bool, bool | None]


def pools(us: Health, eu: Health, ap: Health) -> dict[str, PoolInfo]:
    """Pools by (enabled, health); every pool has a monitor, as the seed's do."""
    return {
        pid: PoolInfo(id=pid, name=pid, enabled=e, healthy=h, monitor_id="m")
        for pid, (e, h) in ((US, us), (EU, eu), (AP, ap))
    }


def served(table: dict[str, Route], geos: tuple[str, ...]) -> set[tuple[object, ...]]:
    return {(table[g].pool_id, table[g].via, table[g].users) for g in geos}


# (name, load balancer, pools) -> for each geo group: (pool, via, what users get)
CASES = [
    (
        "seed, all healthy",
        SEED,
        pools(UP, UP, UP),
        {
            NA: (US, Via.REGION_POOLS, Users.SERVED),
            EUROPE: (EU, Via.REGION_POOLS, Users.SERVED),
            ASIA: (AP, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "seed, us-east down: its geo regions stay on the fallback, itself",
        SEED,
        pools(DOWN, UP, UP),
        {
            NA: (US, Via.FALLBACK, Users.ORIGIN_ERRORS),
            EUROPE: (EU, Via.REGION_POOLS, Users.SERVED),
            ASIA: (AP, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "seed, eu-west down: the healthy fallback us-east serves Europe",
        SEED,
        pools(UP, DOWN, UP),
        {
            NA: (US, Via.REGION_POOLS, Users.SERVED),
            EUROPE: (US, Via.FALLBACK, Users.SERVED),
            ASIA: (AP, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "seed, apac-sg down",
        SEED,
        pools(UP, UP, DOWN),
        {ASIA: (US, Via.FALLBACK, Users.SERVED), NA: (US, Via.REGION_POOLS, Users.SERVED)},
    ),
    (
        "seed, us-east and eu-west down: apac-sg is never used for them",
        SEED,
        pools(DOWN, DOWN, UP),
        {
            NA: (US, Via.FALLBACK, Users.ORIGIN_ERRORS),
            EUROPE: (US, Via.FALLBACK, Users.ORIGIN_ERRORS),
            ASIA: (AP, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "seed, all down",
        SEED,
        pools(DOWN, DOWN, DOWN),
        {NA + EUROPE + ASIA: (US, Via.FALLBACK, Users.ORIGIN_ERRORS)},
    ),
    (
        "seed, fallback us-east disabled: 530 error 1016 for its geo regions",
        SEED,
        pools(OFF, UP, UP),
        {
            NA: (US, Via.FALLBACK, Users.ERROR_1016),
            EUROPE: (EU, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "seed, eu-west re-enabled and not checked yet: unknown is unhealthy",
        SEED,
        pools(UP, UNKNOWN, UP),
        {EUROPE: (US, Via.FALLBACK, Users.SERVED)},
    ),
    (
        "seed, the fallback re-enabled and not checked yet, eu-west down",
        SEED,
        pools(UNKNOWN, DOWN, UP),
        {
            NA: (US, Via.FALLBACK, Users.ORIGIN_ERRORS),
            EUROPE: (US, Via.FALLBACK, Users.ORIGIN_ERRORS),
        },
    ),
    (
        "chains, us-east down: North America fails over to eu-west",
        CHAINS,
        pools(DOWN, UP, UP),
        {
            NA: (EU, Via.REGION_POOLS, Users.SERVED),
            EUROPE: (EU, Via.REGION_POOLS, Users.SERVED),
            ASIA: (AP, Via.REGION_POOLS, Users.SERVED),
        },
    ),
    (
        "chains, us-east and eu-west down: everyone on apac-sg",
        CHAINS,
        pools(DOWN, DOWN, UP),
        {NA + EUROPE + ASIA: (AP, Via.REGION_POOLS, Users.SERVED)},
    ),
    (
        "chains, all down: the fallback's errors",
        CHAINS,
        pools(DOWN, DOWN, DOWN),
        {NA + EUROPE + ASIA: (US, Via.FALLBACK, Users.ORIGIN_ERRORS)},
    ),
    (
        "chains, us-east drained: the rest fail over, nobody reaches the disabled fallback",
        CHAINS,
        pools(OFF, UP, UP),
        {NA: (EU, Via.REGION_POOLS, Users.SERVED), ASIA: (AP, Via.REGION_POOLS, Users.SERVED)},
    ),
    (
        "chains, us-east drained and the others down: 530 everywhere",
        CHAINS,
        pools(OFF, DOWN, DOWN),
        {NA + EUROPE + ASIA: (US, Via.FALLBACK, Users.ERROR_1016)},
    ),
]


@pytest.mark.parametrize(
    ("lb", "state", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_named_cases(
    lb: LoadBalancerInfo,
    state: dict[str, PoolInfo],
    expected: dict[tuple[str, ...], tuple[str, Via, Users]],
) -> None:
    table = routing_table(lb, state)
    assert list(table) == list(GEO_REGIONS)
    for geos, want in expected.items():
        assert served(table, geos) == {want}, geos


def test_stranded_on_the_fallback_is_not_a_failover() -> None:
    wnam = routing_table(SEED, pools(DOWN, UP, UP))["WNAM"]
    assert not wnam.failed_over and not wnam.healthy and wnam.away
    weu = routing_table(SEED, pools(UP, DOWN, UP))["WEU"]
    assert weu.failed_over and weu.healthy and weu.away


def test_geo_regions_without_an_entry_use_the_default_pools() -> None:
    lb = LoadBalancerInfo(
        id="lb", name="x", steering_policy="geo", default_pools=(EU, AP), fallback_pool=US,
        region_pools={"WNAM": (US,)},
    )  # fmt: skip
    table = routing_table(lb, pools(DOWN, DOWN, UP))
    assert (table["WEU"].pool_id, table["WEU"].via) == (AP, Via.DEFAULT_POOLS)
    assert (table["WNAM"].pool_id, table["WNAM"].via) == (US, Via.FALLBACK)  # not the defaults


def test_off_steering_and_the_empty_policy() -> None:
    off = LoadBalancerInfo(
        id="lb", name="x", steering_policy="off", default_pools=(US, EU), fallback_pool=AP,
        region_pools={"WEU": (AP,)},
    )  # fmt: skip
    assert route("WEU", off, pools(DOWN, UP, UP)).pool_id == EU  # region pools are ignored
    unset = LoadBalancerInfo(
        id="lb", name="x", steering_policy="", default_pools=(US, EU), fallback_pool=AP,
        region_pools={"WEU": (AP,)},
    )  # fmt: skip
    assert route("WEU", unset, pools(UP, UP, UP)).pool_id == AP  # "" maps to geo here


def test_the_apis_empty_policy_is_read_as_geo_when_region_pools_are_set() -> None:
    # Cloudflare's default steering_policy is "": the adapter must not turn it into "off".
    lb = lb_from_json(
        {"id": "lb", "name": "x", "steering_policy": "", "default_pools": [US, EU],
         "fallback_pool": US, "region_pools": {"WNAM": [US]}}
    )  # fmt: skip
    assert lb.steering_policy == "" and effective_policy(lb) == "geo"
    assert route("WNAM", lb, pools(DOWN, UP, UP)).via is Via.FALLBACK  # not the default pools


def test_no_monitor_means_never_unhealthy() -> None:
    unmonitored = PoolInfo(id=US, name=US, healthy=None, monitor_id=None)
    assert pool_serving(unmonitored)
    assert not pool_serving(PoolInfo(id=US, name=US, healthy=None, monitor_id="m"))


def test_notes_say_what_the_table_does_not_model() -> None:
    assert routing_notes(SEED) == []
    lb = LoadBalancerInfo(
        id="lb", name="api.erlvinc.com", enabled=False, steering_policy="geo",
        default_pools=(US,), fallback_pool=US, country_pools={"GB": (EU,)},
        pop_pools={"LHR": (EU,)},
        rules=2,
    )  # fmt: skip
    notes = " | ".join(routing_notes(lb))
    assert "does not load-balance" in notes
    assert "country_pools for GB" in notes and "pop_pools for LHR" in notes
    assert "2 custom rules" in notes
    dynamic = LoadBalancerInfo(id="lb", name="x", steering_policy="dynamic_latency")
    assert "failover-order approximation" in routing_notes(dynamic)[0]


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
                st.sampled_from(GEO_REGIONS),
                st.lists(ids, min_size=1, max_size=3, unique=True).map(tuple),
            )
        ),
    )
    state = {
        pid: PoolInfo(
            id=pid,
            name=pid,
            enabled=draw(st.booleans()),
            healthy=draw(st.sampled_from([True, False, None])),
            monitor_id=draw(st.sampled_from(["m", None])),
        )
        for pid in ("p0", "p1", "p2", "p3")
    }
    return lb, state


def healthy_enabled(pool: PoolInfo) -> bool:
    # Written out again from the health-details page, independently of pool_serving.
    if not pool.enabled:
        return False
    return pool.healthy is True or (pool.healthy is None and pool.monitor_id is None)


@given(configurations())
def test_properties_of_every_route(config: tuple[LoadBalancerInfo, dict[str, PoolInfo]]) -> None:
    lb, state = config
    for geo, r in routing_table(lb, state).items():
        listed = lb.steering_policy == "geo" and geo in lb.region_pools
        candidates = lb.region_pools[geo] if listed else lb.default_pools
        # A listed geo region never falls to the default pools, and vice versa.
        if r.via is not Via.FALLBACK:
            assert r.via is (Via.REGION_POOLS if listed else Via.DEFAULT_POOLS)
        healthy = [p for p in candidates if healthy_enabled(state[p])]
        if healthy:
            # The first healthy enabled pool of the list; disabled pools never get traffic.
            assert r.pool_id == healthy[0] and r.users is Users.SERVED
        else:
            # No healthy pool in the list: the fallback, whatever its health.
            fallback = state[lb.fallback_pool or ""]
            assert r.pool_id == lb.fallback_pool and r.via is Via.FALLBACK
            if not fallback.enabled:
                assert r.users is Users.ERROR_1016
            else:
                good = healthy_enabled(fallback)
                assert r.users is (Users.SERVED if good else Users.ORIGIN_ERRORS)
        assert r.preferred == candidates[0]
        assert r == route(geo, lb, state)
