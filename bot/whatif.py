"""``/failover whatif``: where every geo region's traffic would go if some regions were down or
disabled, what users would get, and how long Cloudflare would need to notice (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot.balancer import LiveView
from bot.detection import Detection
from bot.durations import format_duration
from bot.fleet import Fleet
from bot.routing import Route, Users, Via, routing_notes, routing_table

STATES = ("down", "disabled")


@dataclass(frozen=True)
class Row:
    geos: tuple[str, ...]
    now: str  # the region serving them now
    after: str  # the region that would serve them
    fallback: bool  # ``after`` is reached as the fallback pool
    users: Users  # what they would get there

    @property
    def moves(self) -> bool:
        return self.now != self.after or not self.healthy

    @property
    def healthy(self) -> bool:
        return self.users is Users.SERVED


@dataclass(frozen=True)
class WhatIf:
    changes: dict[str, str]  # region -> down | disabled
    rows: list[Row]
    notice: str  # how long until Cloudflare acts on it
    notes: list[str]  # where the routing table is not what Cloudflare will do
    unhealthy_now: list[str]  # regions whose pool is not healthy already, kept as they are


def what_if(fleet: Fleet, view: LiveView, changes: Mapping[str, str]) -> WhatIf:
    pools = dict(view.pools)
    for region, state in changes.items():
        pool = view.pool_by_name(fleet.regions[region].pool)
        if pool is None:
            continue
        if state == "down":
            pools[pool.id] = replace(pool, healthy=False)
        else:
            pools[pool.id] = replace(pool, enabled=False)
    name = {p.id: fleet.region_of_pool(p.name) or p.name for p in view.pools.values()}
    before = routing_table(view.load_balancer, view.pools)
    after = routing_table(view.load_balancer, pools)
    groups: dict[tuple[str, str, bool, Users], list[str]] = {}
    for geo, r in after.items():
        key = (_name(name, before[geo]), _name(name, r), r.via is Via.FALLBACK, r.users)
        groups.setdefault(key, []).append(geo)
    rows = [Row(tuple(geos), *key) for key, geos in groups.items()]
    return WhatIf(
        dict(changes),
        rows,
        _notice(fleet, view, changes),
        routing_notes(view.load_balancer),
        [
            name[p.id]
            for p in view.pools.values()
            if name[p.id] not in changes and (not p.enabled or p.healthy is False)
        ],
    )


def _name(name: Mapping[str, str], r: Route) -> str:
    return name.get(r.pool_id or "", r.pool_id or "none")


def _notice(fleet: Fleet, view: LiveView, changes: Mapping[str, str]) -> str:
    propagation = fleet.load_balancer.propagation
    parts = []
    if "disabled" in changes.values():
        parts.append(
            "a disabled pool is steered around after propagation, about "
            + format_duration(propagation)
        )
    if "down" in changes.values():
        if view.monitor is None:
            parts.append("no monitor is attached: Cloudflare never notices a pool going down")
        else:
            detection = Detection.of(view.monitor, propagation)
            parts.append(f"Cloudflare notices a pool down after its {detection.explain_down()}")
    return "; ".join(parts)
