"""The fleet's status from every angle, gathered at once within the status deadline.

The bot's own probes, Cloudflare's view (pools, health, steering, monitor) with the routing table
it implies, and what users get from the public hostname. Whatever has not answered by the
deadline is reported as missing, with why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from bot.errors import ProviderError
from bot.fleet import Fleet, Region
from bot.fleetstatus import CloudflareRead, FleetStatus, RegionStatus
from bot.health import Prober
from bot.monitor import (
    MonitorState,
    PoolState,
    pool_state,
)
from bot.observations import Outcome, ProbeResult
from bot.ports import LoadBalancer
from bot.reads import PublicCheck
from bot.vantages import Vantages

log = logging.getLogger(__name__)
# Time kept back from the deadline for rendering and posting the answer.
RENDER_MARGIN = 0.3
# Status requests arriving within this of a gathering round share it: 200 people asking at once
# cost one round of probes, one Cloudflare read and one look from each vantage point.
SHARED_FOR = 1.0


class StatusService:
    """Probes, Cloudflare and the public hostname, all at once, cut off at the deadline."""

    def __init__(
        self,
        fleet: Fleet,
        prober: Prober,
        loadbalancer: LoadBalancer | None = None,
        vantages: Vantages | None = None,
        watch_state: Callable[[], Coroutine[Any, Any, MonitorState | None]] | None = None,
    ) -> None:
        self.fleet = fleet
        self.prober = prober
        self.loadbalancer = loadbalancer
        self.vantages = vantages
        # The watch's stored judgement (gray failures), read from the database by any instance.
        self.watch_state = watch_state
        self._rounds: dict[tuple[str, ...], tuple[float, asyncio.Task[FleetStatus]]] = {}

    async def _cloudflare(self) -> CloudflareRead:
        assert self.loadbalancer is not None
        try:
            return CloudflareRead(
                await self.loadbalancer.live_view(self.fleet.load_balancer.hostname)
            )
        except ProviderError as exc:
            return CloudflareRead(None, str(exc))
        except Exception as exc:
            # A bug reading Cloudflare costs Cloudflare's angle, never the whole reply.
            log.exception("reading Cloudflare for status failed")
            return CloudflareRead(None, f"reading it failed ({type(exc).__name__})")

    async def check(self, regions: list[str] | None = None) -> FleetStatus:
        """Every angle of ``regions`` (all by default), from a round shared with the requests
        that arrive within SHARED_FOR of its start."""
        key = tuple(regions or self.fleet.regions)
        now = time.monotonic()
        found = self._rounds.get(key)
        if found is None or now - found[0] > SHARED_FOR or _failed(found[1]):
            found = (now, asyncio.create_task(self._gather(list(key))))
            self._rounds[key] = found
        # One asker giving up (a cancelled request) must not cancel the others' round.
        return await asyncio.shield(found[1])

    async def _gather(self, regions: list[str]) -> FleetStatus:
        chosen = [self.fleet.regions[n] for n in regions]
        started = time.perf_counter()
        budget = max(0.1, self.fleet.status.deadline - RENDER_MARGIN)
        probes = asyncio.create_task(
            self.prober.probe_all(((r.name, o) for r in chosen for o in r.origins), budget=budget)
        )
        cloudflare = asyncio.create_task(self._cloudflare()) if self.loadbalancer else None
        public = asyncio.create_task(self.vantages.check(budget)) if self.vantages else None
        watch = asyncio.create_task(self.watch_state()) if self.watch_state else None
        waiting = [t for t in (cloudflare, public, watch) if t is not None]
        if waiting:
            # The user view bounds its own requests by the budget; a little grace lets it report.
            await asyncio.wait(waiting, timeout=budget + 0.1)
        try:
            results = await probes  # bounded by the same budget
        except Exception as exc:
            # Each angle stands alone: without the probes, Cloudflare and the users still answer.
            log.exception("the bot's probes for status failed")
            results = _unprobed(chosen, f"the bot's probes failed ({type(exc).__name__})")
        cf_read: CloudflareRead | None = None
        if cloudflare is not None:
            if cloudflare.done():
                cf_read = cloudflare.result()
            else:
                cloudflare.cancel()
                cf_read = CloudflareRead(None, f"Cloudflare gave no answer within {budget:g} s")
        checks: list[PublicCheck] = []
        if public is not None and self.vantages is not None:
            if not public.done():
                public.cancel()
                checks = self.vantages.missing(f"no answer within {budget:g} s")
            elif (failed := public.exception()) is not None:
                log.error("what users get, for status, failed", exc_info=failed)
                checks = self.vantages.missing(f"failed ({type(failed).__name__})")
            else:
                checks = public.result()
        judged: MonitorState | None = None
        if watch is not None:
            if watch.done() and watch.exception() is None:
                judged = watch.result()
            else:
                watch.cancel()  # without the watch's judgement, disagreements read as noticing
        by_region: dict[str, list[ProbeResult]] = {r.name: [] for r in chosen}
        for result in results:
            by_region[result.region].append(result)
        view = cf_read.view if cf_read else None
        statuses = []
        for r in chosen:
            pool = view.pool_by_name(r.pool) if view else None
            state = pool_state(by_region[r.name])
            if pool is not None and not pool.enabled:
                state = PoolState.DISABLED
            statuses.append(RegionStatus(r, state, by_region[r.name], pool))
        return FleetStatus(
            fleet=self.fleet,
            regions=statuses,
            checked_at=datetime.now(UTC),
            elapsed=time.perf_counter() - started,
            cloudflare=cf_read,
            public=checks,
            watch=judged,
        )


def _unprobed(regions: list[Region], reason: str) -> list[ProbeResult]:
    """Every origin of ``regions`` as not answered, with ``reason``: unknown, never down."""
    now = datetime.now(UTC)
    return [
        ProbeResult(r.name, o.name, o.url, Outcome.NO_ANSWER, reason, now)
        for r in regions
        for o in r.origins
    ]


def _failed(task: asyncio.Task[FleetStatus]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
