"""The fleet's status as the bot's own probes see it, gathered within the status deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.fleet import Fleet, Region
from bot.health import Prober
from bot.monitor import PoolState, pool_state
from bot.observations import ProbeResult

# Time kept back from the deadline for rendering and posting the answer.
RENDER_MARGIN = 0.3


@dataclass(frozen=True)
class RegionStatus:
    region: Region
    state: PoolState
    probes: list[ProbeResult]

    @property
    def summary(self) -> str:
        """Why the region is not healthy, from its worst origins ("d1 error")."""
        if self.state is PoolState.HEALTHY:
            return "healthy"
        reasons: list[str] = []
        for p in self.probes:
            if p.healthy:
                continue
            why = ", ".join(f"{k} {v}" for k, v in p.failing_checks.items()) or p.reason
            reasons.append(why if len(self.probes) == 1 else f"{p.origin}: {why}")
        return "; ".join(dict.fromkeys(reasons))


@dataclass(frozen=True)
class FleetStatus:
    regions: list[RegionStatus]
    checked_at: datetime
    elapsed: float  # seconds the probes took

    @property
    def healthy(self) -> bool:
        return all(r.state is PoolState.HEALTHY for r in self.regions)

    @property
    def verdict(self) -> str:
        """One line on top: "all healthy" or "eu-west down: d1 error"."""
        bad = [r for r in self.regions if r.state is not PoolState.HEALTHY]
        if not bad:
            return (
                "all healthy" if len(self.regions) > 1 else f"{self.regions[0].region.name} healthy"
            )
        return "; ".join(f"{r.region.name} {r.state}: {r.summary}" for r in bad)


class StatusService:
    """Probes every origin of the chosen regions at once and sums them up per region."""

    def __init__(self, fleet: Fleet, prober: Prober) -> None:
        self.fleet = fleet
        self.prober = prober

    async def check(self, regions: list[str] | None = None) -> FleetStatus:
        chosen = [self.fleet.regions[n] for n in (regions or list(self.fleet.regions))]
        started = time.perf_counter()
        budget = max(0.1, self.fleet.status.deadline - RENDER_MARGIN)
        results = await self.prober.probe_all(
            ((r, o) for r in chosen for o in r.origins), budget=budget
        )
        by_region: dict[str, list[ProbeResult]] = {r.name: [] for r in chosen}
        for result in results:
            by_region[result.region].append(result)
        return FleetStatus(
            regions=[
                RegionStatus(r, pool_state(by_region[r.name]), by_region[r.name]) for r in chosen
            ],
            checked_at=datetime.now(UTC),
            elapsed=time.perf_counter() - started,
        )
