"""``failover-bot discover``: a failover.toml written from what a live account holds."""

from __future__ import annotations

from typing import Any

from bot.fleet import parse_fleet
from bot.lbmodel import LiveView, PoolInfo
from bot.routing import effective_policy

ROLES = ("primary", "secondary", "tertiary")


def _region_names(pools: list[PoolInfo]) -> dict[str, str]:
    """Pool id -> region name: the pool names less their common prefix ("foundation-us-east")."""
    parts = [p.name.split("-") for p in pools]
    shared = 0
    while len(parts) > 1 and all(len(x) > shared + 1 for x in parts):
        if len({x[shared] for x in parts}) != 1:
            break
        shared += 1
    return {p.id: "-".join(x[shared:]) for p, x in zip(pools, parts, strict=True)}


def _seconds(value: float) -> str:
    return f"{value:g}s"


def plan_from_live(live: LiveView, public_url: str | None = None) -> dict[str, Any]:
    """The topology file's data for ``live``; it validates as a Fleet before it is returned."""
    lb = live.load_balancer
    ordered = [live.pools[p] for p in lb.default_pools if p in live.pools]
    ordered += [p for p in live.pools.values() if p not in ordered and p.id in lb.pools_used]
    region_of = _region_names(ordered)
    monitor = live.monitor
    scheme = "https" if monitor is None or monitor.type != "http" else "http"
    data: dict[str, Any] = {
        "load_balancer": {
            "name": lb.name,
            "hostname": lb.name,
            "steering_policy": effective_policy(lb),
            "session_affinity": lb.session_affinity,
            "default_pools": [region_of[p] for p in lb.default_pools if p in region_of],
            "fallback_pool": region_of.get(
                lb.fallback_pool or "", ordered[0].name if ordered else ""
            ),
            "region_pools": {
                geo: [region_of[p] for p in ids if p in region_of]
                for geo, ids in lb.region_pools.items()
            },
        },
        "regions": {
            region_of[p.id]: {
                "role": ROLES[i] if i < len(ROLES) else "secondary",
                "pool": p.name,
                "minimum_origins": p.minimum_origins,
                "origins": [
                    {
                        "name": o.name,
                        "url": f"{scheme}://{o.address}",
                        "weight": o.weight,
                        "enabled": o.enabled,
                    }
                    for o in p.origins
                ],
            }
            for i, p in enumerate(ordered)
        },
        "public": {"url": public_url or f"https://{lb.name}/health"},
    }
    if monitor is not None:
        data["monitor"] = {
            "method": monitor.method,
            "path": monitor.path,
            "timeout": _seconds(monitor.timeout),
            "retries": monitor.retries,
            "interval": _seconds(monitor.interval),
            "expected_codes": monitor.expected_codes or "200",
            "expected_body": monitor.expected_body,
            "consecutive_down": max(1, monitor.consecutive_down),
            "consecutive_up": max(1, monitor.consecutive_up),
        }
    parse_fleet(data, "discovered topology")
    return data
