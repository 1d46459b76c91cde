"""The live load balancer held against the plan in failover.toml and the seed's checklist (pure).

Each line passes, or says what differs and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.fleet import GEO_REGIONS, Fleet
from bot.lbmodel import LiveView
from bot.monitor import PoolState
from bot.routing import effective_policy

FIX_MONITOR = (
    "edit the monitor (Traffic → Load Balancing → Manage Monitors) or failover.toml [monitor]"
)
FIX_LB = "edit the load balancer (Traffic → Load Balancing) or failover.toml [load_balancer]"


@dataclass(frozen=True)
class CheckLine:
    item: str
    ok: bool
    detail: str  # what was found; for a failure, what differs
    fix: str | None = None


def _same(item: str, live: object, plan: object, fix: str) -> CheckLine:
    if live == plan:
        return CheckLine(item, True, f"{live}")
    return CheckLine(item, False, f"live {live}, plan {plan}", fix)


def check_plan(
    fleet: Fleet, live: LiveView, probe_states: Mapping[str, PoolState] | None = None
) -> list[CheckLine]:
    """Every line of the checklist, in the order an operator would walk it."""
    lines: list[CheckLine] = []
    names = {p.id: p.name for p in live.pools.values()}
    region_of = {r.pool: r.name for r in fleet.regions.values()}

    def regions(pool_ids: tuple[str, ...] | list[str]) -> list[str]:
        return [region_of.get(names.get(p, p), names.get(p, p)) for p in pool_ids]

    m, plan_m = live.monitor, fleet.monitor
    if m is None:
        lines.append(
            CheckLine("monitor", False, "no monitor is attached to the pools", FIX_MONITOR)
        )
    else:
        lines += [
            _same(
                "monitor method and path",
                f"{m.method} {m.path}",
                f"{plan_m.method} {plan_m.path}",
                FIX_MONITOR,
            ),
            _same("monitor interval", f"{m.interval:g} s", f"{plan_m.interval:g} s", FIX_MONITOR),
            _same("monitor timeout", f"{m.timeout:g} s", f"{plan_m.timeout:g} s", FIX_MONITOR),
            _same("monitor retries", m.retries, plan_m.retries, FIX_MONITOR),
            _same("monitor expected codes", m.expected_codes, plan_m.expected_codes, FIX_MONITOR),
            _same("monitor expected body", m.expected_body, plan_m.expected_body, FIX_MONITOR),
        ]
    lb, plan_lb = live.load_balancer, fleet.load_balancer
    lines.append(
        CheckLine("load balancer enabled", True, "enabled")
        if lb.enabled
        else CheckLine(
            "load balancer enabled",
            False,
            f"disabled: {lb.name} does not load-balance (only its DNS records answer, if any)",
            FIX_LB,
        )
    )
    lines.append(_same("steering policy", effective_policy(lb), plan_lb.steering_policy, FIX_LB))
    lines.append(
        _same(
            "default pool order",
            " › ".join(regions(lb.default_pools)),
            " › ".join(plan_lb.default_pools),
            FIX_LB,
        )
    )
    fallback = regions([lb.fallback_pool])[0] if lb.fallback_pool else "none"
    lines.append(_same("fallback pool", fallback, plan_lb.fallback_pool, FIX_LB))
    unmapped = [g for g in GEO_REGIONS if not lb.region_pools.get(g)]
    wrong = []
    for g in GEO_REGIONS:
        live_order, plan_order = (
            regions(lb.region_pools.get(g, ())),
            plan_lb.region_pools.get(g, []),
        )
        if live_order and live_order != plan_order:
            wrong.append(
                f"{g} → {' › '.join(live_order)} (plan {' › '.join(plan_order) or 'none'})"
            )
    if unmapped or wrong:
        detail = "; ".join(
            ([f"unmapped: {' '.join(unmapped)} (they use the default pools)"] if unmapped else [])
            + wrong
        )
        lines.append(CheckLine("geo regions mapped", False, detail, FIX_LB))
    else:
        lines.append(CheckLine("geo regions mapped", True, f"all {len(GEO_REGIONS)} as planned"))
    lines.append(_same("session affinity", lb.session_affinity, plan_lb.session_affinity, FIX_LB))
    lines.append(
        CheckLine(
            "proxied",
            lb.proxied,
            "orange cloud" if lb.proxied else "DNS only",
            None if lb.proxied else FIX_LB,
        )
    )
    for region in fleet.regions.values():
        pool = live.pool_by_name(region.pool)
        item = f"pool {region.pool} ({region.name})"
        if pool is None:
            lines.append(
                CheckLine(
                    item,
                    False,
                    "not found in the account",
                    f"create it, or fix regions.{region.name}.pool",
                )
            )
            continue
        problems = []
        # Each kind of problem has its own fix: an enabled origin that fails is not fixed by
        # enabling anything, but by looking at the origin.
        fixes: dict[str, None] = {}  # ordered, without repeats
        plan_fix = (
            "set the pool as planned (Traffic → Load Balancing → Manage Pools), "
            f"or fix regions.{region.name} in failover.toml"
        )
        look_fix = (
            f"look at the origin itself: `/failover status {region.name}` shows what its "
            "health check answers"
        )
        if not pool.enabled:
            problems.append("the pool is disabled")
            fixes["enable the pool (`/failover restore` if a drain holds it)"] = None
        if pool.minimum_origins != region.minimum_origins:
            problems.append(
                f"minimum_origins live {pool.minimum_origins}, plan {region.minimum_origins}"
            )
            fixes[plan_fix] = None
        for origin in region.origins:
            live_origin = pool.origin(origin.name)
            if live_origin is None:
                problems.append(f"origin {origin.name} is missing")
                fixes[plan_fix] = None
                continue
            planned = urlsplit(origin.url).hostname or origin.url
            address = urlsplit(f"//{live_origin.address}").hostname or live_origin.address
            if address != planned:
                problems.append(
                    f"origin {origin.name} points at {address}, the plan at {planned}: the bot "
                    "probes one host and Cloudflare another"
                )
                fixes[plan_fix] = None
            if live_origin.weight != origin.weight:
                out = ": it takes no traffic" if live_origin.weight == 0 else ""
                problems.append(
                    f"origin {origin.name} has weight {live_origin.weight:g}{out} "
                    f"(plan {origin.weight:g})"
                )
                fixes[plan_fix] = None
            if not live_origin.enabled:
                problems.append(f"origin {origin.name} is disabled")
                fixes[f"enable origin {origin.name} in the pool"] = None
            elif live_origin.healthy is False:
                problems.append(
                    f"origin {origin.name} fails Cloudflare's check ({live_origin.failure_reason})"
                )
                fixes[look_fix] = None
        state = (probe_states or {}).get(region.name)
        # DISABLED is the load balancer's word, said above; the others are the origins' health.
        if state is not None and state not in (PoolState.HEALTHY, PoolState.DISABLED):
            problems.append(f"the bot's probes say {state}")
            fixes[look_fix] = None
        if problems:
            lines.append(CheckLine(item, False, "; ".join(problems), "; ".join(fixes)))
        else:
            count = len(pool.origins)
            lines.append(
                CheckLine(
                    item,
                    True,
                    f"enabled, {count} origin{'s' if count != 1 else ''} enabled and answering",
                )
            )
    return lines
