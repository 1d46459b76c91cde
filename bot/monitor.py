"""Observations -> pool states (pure; no I/O, no clock of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from bot.observations import ProbeResult


class PoolState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # some origins unhealthy
    DOWN = "down"  # every origin unhealthy
    DISABLED = "disabled"  # disabled in the load balancer
    UNKNOWN = "unknown"  # not every origin answered in time, and none failed


def pool_state(results: Sequence[ProbeResult]) -> PoolState:
    """The state of one pool from one round of its origins' probes."""
    answered = [r for r in results if r.answered]
    unhealthy = [r for r in answered if not r.healthy]
    if not results or not answered:
        return PoolState.UNKNOWN
    if len(unhealthy) == len(results):
        return PoolState.DOWN
    if unhealthy:
        return PoolState.DEGRADED
    if len(answered) < len(results):
        return PoolState.UNKNOWN
    return PoolState.HEALTHY
