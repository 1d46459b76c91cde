"""``/failover whatif``: where every geo region's traffic would go if some regions were down or
disabled, what users would get, and how long Cloudflare would need to notice (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot.detection import Detection
from bot.durations import format_duration
from bot.fleet import Fleet
from bot.lbmodel import LiveView
from bot.routing import Users, Via, routing_notes, routing_table

STATES = ("down", "disabled")


@dataclass(frozen=True)
class Row:
    geos: tuple[str, ...]
    now: str  # the region serving them now
    after: str  # the region that would serve them
    fallback: bool  # ``after`` is reached as the fallback pool
    users: Users  # what they would get there, as Cloudflare routes
    unnoticed: bool = False  # ``after`` is down but has no monitor: Cloudflare never notices

    @property
    def moves(self) -> bool:
        return self.now != self.after or not self.healthy

    @property
    def healthy(self) -> bool:
        return self.users is Users.SERVED and not self.unnoticed


@dataclass(frozen=True)
class WhatIf:
    changes: dict[str, str]  # region -> down | disabled
    rows: list[Row]
    notice: str  # how long until Cloudflare acts on it
    notes: list[str]  # where the routing table is not what Cloudflare will do
    unhealthy_now: list[str]  # regions whose pool is not healthy already, kept as they are


def what_if(fleet: Fleet, view: LiveView, changes: Mapping[str, str]) -> WhatIf:
    pools = dict(view.pools)
    name = fleet.region_names(view.pools.values())
    unnoticed = set()
    for region, state in changes.items():
        pool = view.pool_by_name(fleet.regions[region].pool)
        if pool is None:
            continue
        if state == "disabled":
            pools[pool.id] = replace(pool, enabled=False)
        elif pool.monitor_id is None:
            unnoticed.add(region)  # Cloudflare never marks it unhealthy: it keeps its traffic
        else:
            pools[pool.id] = replace(pool, healthy=False)
    before = routing_table(view.load_balancer, view.pools)
    after = routing_table(view.load_balancer, pools)
    groups: dict[tuple[str, str, bool, Users], list[str]] = {}
    for geo, r in after.items():
        to = name.get(r.pool_id or "", r.pool_id or "none")
        now = name.get(before[geo].pool_id or "", before[geo].pool_id or "none")
        groups.setdefault((now, to, r.via is Via.FALLBACK, r.users), []).append(geo)
    rows = [Row(tuple(geos), *key, key[1] in unnoticed) for key, geos in groups.items()]
    used = view.load_balancer.pools_used
    return WhatIf(
        dict(changes),
        rows,
        _notice(fleet, view, changes, unnoticed),
        routing_notes(view.load_balancer),
        [
            name[p.id]
            for p in view.pools.values()
            if p.id in used and name[p.id] not in changes and (not p.enabled or p.healthy is False)
        ],
    )


def _notice(fleet: Fleet, view: LiveView, changes: Mapping[str, str], unnoticed: set[str]) -> str:
    propagation = fleet.load_balancer.propagation
    parts = []
    if "disabled" in changes.values():
        parts.append(
            "a disabled pool is steered around after propagation, about "
            + format_duration(propagation)
        )
    noticed = [r for r, state in changes.items() if state == "down" and r not in unnoticed]
    if noticed and view.monitor is not None:
        detection = Detection.of(view.monitor, propagation)
        parts.append(f"Cloudflare notices a pool down after its {detection.explain_down()}")
    if unnoticed:
        parts.append(
            f"{', '.join(sorted(unnoticed))} has no monitor: Cloudflare never notices it down"
        )
    return "; ".join(parts)
