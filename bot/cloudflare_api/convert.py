"""Cloudflare's JSON -> the domain's load balancer types.

Works on plain dicts: the SDK's models are dumped first, so fields it does not declare
(``healthy``, ``failure_reason``) and shapes it gets wrong (pool health) are read as Cloudflare
sends them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.lbmodel import (
    HealthEvent,
    LoadBalancerInfo,
    MonitorInfo,
    OriginChange,
    OriginCheck,
    OriginInfo,
    PoolHealth,
    PoolInfo,
)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def origin_from_json(d: dict[str, Any]) -> OriginInfo:
    return OriginInfo(
        name=str(d.get("name", "")),
        address=str(d.get("address", "")),
        enabled=d.get("enabled", True) is not False,
        weight=float(d["weight"]) if d.get("weight") is not None else 1.0,
        healthy=_bool(d.get("healthy")),
        failure_reason=d.get("failure_reason"),
    )


def pool_from_json(d: dict[str, Any]) -> PoolInfo:
    return PoolInfo(
        id=str(d["id"]),
        name=str(d.get("name", "")),
        enabled=d.get("enabled", True) is not False,
        minimum_origins=int(d.get("minimum_origins") or 1),
        origins=tuple(origin_from_json(o) for o in d.get("origins") or ()),
        healthy=_bool(d.get("healthy")),
        monitor_id=d.get("monitor"),
        description=str(d.get("description") or ""),
    )


def lb_from_json(d: dict[str, Any]) -> LoadBalancerInfo:
    return LoadBalancerInfo(
        id=str(d["id"]),
        name=str(d.get("name", "")),
        enabled=d.get("enabled", True) is not False,
        proxied=bool(d.get("proxied", False)),
        # "" is the API's default: geo when region, country or PoP pools are set, else off.
        steering_policy=str(d.get("steering_policy") or ""),
        session_affinity=str(d.get("session_affinity") or "none"),
        default_pools=tuple(d.get("default_pools") or ()),
        fallback_pool=d.get("fallback_pool"),
        region_pools=_mapping(d.get("region_pools")),
        ttl=d.get("ttl"),
        country_pools=_mapping(d.get("country_pools")),
        pop_pools=_mapping(d.get("pop_pools")),
        rules=sum(1 for r in d.get("rules") or () if not (r or {}).get("disabled")),
    )


def _mapping(value: Any) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in (value or {}).items() if v}


def monitor_from_json(d: dict[str, Any]) -> MonitorInfo:
    return MonitorInfo(
        id=str(d["id"]),
        type=str(d.get("type") or "http"),
        method=str(d.get("method") or "GET"),
        path=str(d.get("path") or "/"),
        interval=float(d.get("interval") or 60),
        timeout=float(d.get("timeout") or 5),
        retries=int(d["retries"]) if d.get("retries") is not None else 2,
        expected_codes=str(d.get("expected_codes") or ""),
        expected_body=str(d.get("expected_body") or ""),
        consecutive_down=int(d.get("consecutive_down") or 0),
        consecutive_up=int(d.get("consecutive_up") or 0),
        follow_redirects=bool(d.get("follow_redirects", False)),
        header={k: list(v) for k, v in (d.get("header") or {}).items()},
        description=str(d.get("description") or ""),
    )


def pool_health_from_json(d: dict[str, Any]) -> PoolHealth:
    """The real shape: ``pop_health`` by location, then a list of one-key dicts by address."""
    by_location: dict[str, tuple[bool, tuple[OriginCheck, ...]]] = {}
    for location, data in (d.get("pop_health") or {}).items():
        checks: list[OriginCheck] = []
        for entry in data.get("origins") or ():
            for address, check in entry.items():
                checks.append(
                    OriginCheck(
                        address=address,
                        healthy=bool(check.get("healthy")),
                        failure_reason=str(check.get("failure_reason") or ""),
                        response_code=check.get("response_code"),
                        rtt=check.get("rtt"),
                    )
                )
        by_location[location] = (bool(data.get("healthy")), tuple(checks))
    return PoolHealth(pool_id=str(d.get("pool_id", "")), by_location=by_location)


def parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def event_from_json(d: dict[str, Any]) -> HealthEvent:
    pool = d.get("pool") or {}
    return HealthEvent(
        id=int(d.get("id", 0)),
        at=parse_time(str(d["timestamp"])),
        pool_id=str(pool.get("id", "")),
        pool_name=str(pool.get("name", "")),
        pool_healthy=_bool(pool.get("healthy")),
        pool_changed=bool(pool.get("changed")),
        origins=tuple(
            OriginChange(
                name=str(o.get("name", "")),
                address=str(o.get("address", "")),
                healthy=_bool(o.get("healthy")),
                changed=bool(o.get("changed")),
                failure_reason=str(o.get("failure_reason") or ""),
            )
            for o in d.get("origins") or ()
        ),
    )
