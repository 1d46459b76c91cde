"""``/failover whatif``: the fate of every geo region, computed without changing anything."""

from __future__ import annotations

from dataclasses import replace

from bot.fleet import Fleet, load_fleet
from bot.planned import planned_view
from bot.routing import Users
from bot.whatif import what_if

from .conftest import SEED_LITERAL

SEED = load_fleet(SEED_LITERAL)


def fate(fleet: Fleet, **changes: str) -> dict[str, tuple[str, str, Users]]:
    w = what_if(fleet, planned_view(fleet), {k.replace("_", "-"): v for k, v in changes.items()})
    return {g: (r.now, r.after, r.users) for r in w.rows for g in r.geos}


def test_seed_literal_us_east_down_strands_north_america() -> None:
    f = fate(SEED, us_east="down")
    assert f["WNAM"] == ("us-east", "us-east", Users.ORIGIN_ERRORS)
    assert f["WEU"] == ("eu-west", "eu-west", Users.SERVED)
    w = what_if(SEED, planned_view(SEED), {"us-east": "down"})
    assert "monitor every 30 s × 2 checks" in w.notice


def test_seed_literal_fallback_disabled_gives_530() -> None:
    assert fate(SEED, us_east="disabled")["ENAM"] == ("us-east", "us-east", Users.ERROR_1016)
    w = what_if(SEED, planned_view(SEED), {"us-east": "disabled"})
    assert "after propagation, about 5.0 s" in w.notice


def test_a_pool_without_a_monitor_keeps_its_traffic_when_down(fleet: Fleet) -> None:
    view = planned_view(fleet)
    pool = view.pools["foundation-eu-west"]
    view = replace(view, pools={**view.pools, pool.id: replace(pool, monitor_id=None)})
    w = what_if(fleet, view, {"eu-west": "down"})
    [row] = [r for r in w.rows if "WEU" in r.geos]
    assert (row.now, row.after, row.unnoticed, row.healthy) == ("eu-west", "eu-west", True, False)
    assert "eu-west has no monitor: Cloudflare never notices it down" in w.notice


def test_chains_fail_over(fleet: Fleet) -> None:
    f = fate(fleet, us_east="down", eu_west="down")
    assert {f[g] for g in ("WNAM", "WEU", "SEAS")} == {
        ("us-east", "apac-sg", Users.SERVED),
        ("eu-west", "apac-sg", Users.SERVED),
        ("apac-sg", "apac-sg", Users.SERVED),
    }
