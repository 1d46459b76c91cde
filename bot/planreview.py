"""The plan as Cloudflare will execute it: where it does not do what its authors think (pure).

``/failover check`` shows these lines beside the live-against-plan ones (bot/plancheck.py): each
passes, or says what will happen and the fix. They read a load balancer (live, or the plan's own
from failover.toml, bot/planned.py) with the routing rules of bot/routing.py.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from bot.detection import Detection
from bot.durations import format_duration
from bot.fleet import GEO_REGIONS, Fleet
from bot.lbmodel import LiveView
from bot.plancheck import FIX_LB, FIX_MONITOR, CheckLine
from bot.routing import chain, effective_policy, routing_notes

FIX_SERVED_BY = (
    "make each deployment name itself in a response header (e.g. X-Gateway-Region) and set "
    '[public] served_by = { header = "X-Gateway-Region" }'
)
# Three capital letters: an IATA airport code, the way Cloudflare names its data centers (colos).
_COLO = re.compile(r"^[A-Z]{3}$")


def review_plan(fleet: Fleet, view: LiveView) -> list[CheckLine]:
    """Every plan line, in the order an operator would walk them."""
    return [
        *failover_paths(fleet, view),
        fallback_line(fleet, view),
        detection_line(fleet, view),
        *monitor_lines(fleet, view),
        overrides_line(view),
        served_by_line(fleet),
        affinity_line(view),
    ]


def _names(fleet: Fleet, view: LiveView) -> dict[str, str]:
    """Pool id -> region name (the pool's name when it is not in failover.toml)."""
    return fleet.region_names(view.pools.values())


def _fleet_pools(fleet: Fleet, view: LiveView) -> list[str]:
    """The pools that matter: those the load balancer uses, and those failover.toml plans.

    Other pools of the account (staging, another service) are none of this plan's business.
    """
    planned = [p.id for p in view.pools.values() if fleet.region_of_pool(p.name)]
    return list(dict.fromkeys([*view.load_balancer.pools_used, *planned]))


def failover_paths(fleet: Fleet, view: LiveView) -> list[CheckLine]:
    """For each geo region, the pools Cloudflare tries in order, then the fallback."""
    lb = view.load_balancer
    name = _names(fleet, view)
    everyone = _fleet_pools(fleet, view)
    fallback_id = lb.fallback_pool or ""
    fallback = name.get(fallback_id, "none")
    paths: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for geo in GEO_REGIONS:
        _, pools = chain(geo, lb)
        paths[pools].append(geo)
    lines = []
    for pools, geos in paths.items():
        regions = [name.get(p, p) for p in pools]
        path = " → ".join([*regions, f"fallback {fallback}"])
        reached = set(pools) | {lb.fallback_pool}
        unused = [p for p in everyone if p not in reached]
        item = f"failover path of {' '.join(geos)}"
        if not unused:
            lines.append(CheckLine(item, True, path))
            continue
        if len(reached) == 1:
            what = "no failover: when it is down, their users get errors"
        else:
            missing = " ".join(name.get(p, p) for p in unused)
            tried = _and(list(dict.fromkeys(name.get(p, p) for p in [*pools, fallback_id])))
            what = (
                f"{missing} is never used: with {tried} down, their users get errors even while "
                f"{missing} is healthy"
            )
        better = [*pools, *(p for p in everyone if p not in pools)]
        listing = json.dumps([name.get(p, p) for p in better])
        fix = (
            "list the whole chain, in failover.toml and on the load balancer: "
            f"`{geos[0]} = {listing}`"
        )
        if len(geos) > 1:
            fix += f" (and the same for {' '.join(geos[1:])})"
        lines.append(CheckLine(item, False, f"{path}: {what}", fix))
    if effective_policy(lb) != "geo":
        lines = [CheckLine(ln.item, ln.ok, ln.detail + " (default pools)", ln.fix) for ln in lines]
    return lines


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def fallback_line(fleet: Fleet, view: LiveView) -> CheckLine:
    lb = view.load_balancer
    name = _names(fleet, view)
    pool = view.pools.get(lb.fallback_pool or "")
    if pool is None:
        return CheckLine("fallback pool", False, "the load balancer names none", FIX_LB)
    fallback = name[pool.id]
    if not pool.enabled:
        return CheckLine(
            "fallback pool",
            False,
            f"{fallback} is disabled: geo regions with no healthy pool get Cloudflare's 530 "
            "(error 1016)",
            f"enable {fallback}, or choose another fallback",
        )
    primary_of = [g for g in GEO_REGIONS if chain(g, lb)[1][:1] == (pool.id,)]
    alone = [g for g in primary_of if set(chain(g, lb)[1]) == {pool.id}]
    if alone:
        return CheckLine(
            "fallback pool",
            False,
            f"{fallback} is also the only pool of {' '.join(alone)}: when it is down they fall "
            "back onto it, so nothing takes over",
            "list more pools for them (above), or choose a fallback that is not their pool",
        )
    also = ""
    if primary_of:
        also = f"; also the first pool of {' '.join(primary_of)}, whose lists go on"
    return CheckLine("fallback pool", True, f"{fallback}, enabled{also}")


def detection_line(fleet: Fleet, view: LiveView) -> CheckLine:
    item = "detection against the RTO target"
    if view.monitor is None:
        return CheckLine(item, False, "no monitor: Cloudflare never notices an outage", FIX_MONITOR)
    d = Detection.of(view.monitor, fleet.load_balancer.propagation)
    target = fleet.targets.rto
    detail = f"{d.explain_down()}; the RTO target is {format_duration(target)}"
    if d.down(timeouts=True) < target:
        return CheckLine(item, True, detail)
    # The longest interval that keeps even a timed-out origin inside the target.
    room = target - d.propagation - (1 + d.retries) * d.timeout
    longest = int((room - 0.001) / d.consecutive_down) if room > 0 else 0  # strictly inside
    fix = (
        f"check every {longest} s or less (with consecutive_down {d.consecutive_down})"
        if longest >= 1
        else "fewer retries, a shorter timeout or fewer consecutive_down checks"
    )
    return CheckLine(item, False, detail, f"{fix}, or accept a longer RTO target")


def monitor_lines(fleet: Fleet, view: LiveView) -> list[CheckLine]:
    lines = []
    name = _names(fleet, view)
    pools = [view.pools[p] for p in _fleet_pools(fleet, view) if p in view.pools]
    ids = [p.monitor_id for p in pools]
    common = max(set(ids), key=ids.count) if ids else None
    odd = [
        f"{name[p.id]} has no monitor: Cloudflare never marks it unhealthy, so traffic never "
        "fails over from it"
        if p.monitor_id is None
        else f"{name[p.id]} uses monitor {p.monitor_id}, the others {common}"
        for p in pools
        if p.monitor_id != common or p.monitor_id is None
    ]
    if odd:
        lines.append(CheckLine("monitor on every pool", False, "; ".join(odd), FIX_MONITOR))
    else:
        lines.append(CheckLine("monitor on every pool", True, "the same monitor on all pools"))
    if view.monitor is None:
        return lines
    headers = {k.lower(): v for k, v in view.monitor.header.items()}
    problems = []
    host = headers.get("host", [])
    if view.load_balancer.name in host:
        problems.append(
            f"Host {view.load_balancer.name} is the load balancer's own hostname: a check sent "
            "with it may be answered through the load balancer instead of by the pool's origin, "
            "so every pool can look as healthy as the one the load balancer picks"
        )
    if "user-agent" in headers:
        problems.append(
            f"User-Agent {headers['user-agent'][0]!r} is ignored: Cloudflare's monitor always "
            "sends its own"
        )
    if problems:
        fix = "set Host to a hostname each origin serves (or none) and drop the User-Agent"
        lines.append(CheckLine("monitor headers", False, "; ".join(problems), fix))
    else:
        shown = ", ".join(f"{k}: {v[0]}" for k, v in view.monitor.header.items()) or "none"
        lines.append(CheckLine("monitor headers", True, shown))
    return lines


def overrides_line(view: LiveView) -> CheckLine:
    notes = routing_notes(view.load_balancer)
    if notes:
        return CheckLine("steering overrides", False, "; ".join(notes), FIX_LB)
    return CheckLine("steering overrides", True, "none: region and default pools decide")


def served_by_line(fleet: Fleet) -> CheckLine:
    """How the bot tells which pool served a user (the seed's /health ``region`` is the colo)."""
    item = "which pool served a user"
    rule = fleet.public.served_by if fleet.public else None
    if rule is None:
        return CheckLine(
            item,
            False,
            "no served_by rule: shown as unknown, and drills cannot tell",
            FIX_SERVED_BY,
        )
    colo_values = [v for v in rule.values if _COLO.match(v)]
    if rule.json_field == "region" or colo_values:
        said = f" (values {' '.join(colo_values)} are data centers)" if colo_values else ""
        return CheckLine(
            item,
            False,
            f"the rule reads the colo{said}: the seed's /health reports `region` from cf.colo, "
            "the edge data center that took the request, the same whichever pool answered",
            FIX_SERVED_BY,
        )
    where = f"header {rule.header}" if rule.header else f"JSON field {rule.json_field}"
    return CheckLine(item, True, f"the {where} names the deployment that answered")


def affinity_line(view: LiveView) -> CheckLine:
    affinity = view.load_balancer.session_affinity
    if affinity in ("", "none"):
        return CheckLine("session affinity after a failback", True, "none")
    return CheckLine(
        "session affinity after a failback",
        True,
        f"{affinity}: clients pinned to another pool during a failover stay there while it is "
        "healthy, so users come back more slowly than Cloudflare's own rejoin",
    )
