"""Drills: a game-day failover of one region, measured as users see it, always restored.

Phases, each committed before the external call it stands for: preflight -> saving ->
disabling -> measuring RTO -> holding (safeguards watch the receiving pools) -> restoring ->
measuring rejoin -> SUCCEEDED / FAILED (a target missed) / ABORTED (a safeguard, or cancelled) /
INTERRUPTED (a real incident, or the bot restarted) / BLOCKED (preflight refused). Restore runs
in ``finally``. The lease holder runs a drill as a task; a drill found mid-way without its task
(the bot restarted) is restored to the saved configuration and marked INTERRUPTED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.db.models import Incident, Operation
from bot.drains import _get, audit_change, in_flight, journal, post_owed
from bot.fleet import DAYS, Fleet
from bot.loadbalancer.port import LoadBalancer
from bot.logs import operation_id
from bot.monitor import MonitorState, PoolState
from bot.notifier import OperationNotifier
from bot.routing import routing_table
from bot.safety import InFlight, Proposal, after_change, assess, blast_radius, blocked_by
from bot.userview import PublicCheck, UserView

log = logging.getLogger(__name__)
RUNNING = ("saving", "disabling", "measuring_rto", "holding", "restoring", "measuring_rejoin")
OUTCOMES = ("succeeded", "failed", "aborted", "interrupted", "blocked")


def next_weekly(now: datetime, day: str, hhmm: str) -> datetime:
    """The next ``day`` (mon..sun) at ``hhmm`` UTC at or after ``now``."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    days_ahead = (DAYS.index(day.lower()) - now.weekday()) % 7
    at = (now + timedelta(days=days_ahead)).replace(
        hour=hour, minute=minute, second=0, microsecond=0
    )
    return at if at >= now else at + timedelta(days=7)


def _figures(found: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {'—' if v is None else f'{v:.1f} s'}" for k, v in found.items())


class DrillStopped(Exception):
    """A safeguard fired, the drill was cancelled, or a real incident began."""

    def __init__(self, outcome: str, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome


class Drills:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        loadbalancer: LoadBalancer | None,
        userview: UserView,
        clock: Callable[[], datetime],
        monitor_state: Callable[[], MonitorState | None],
        channel: str = "",
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.loadbalancer = loadbalancer
        self.userview = userview
        self.clock = clock
        self.monitor_state = monitor_state
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.channel = channel

    async def _note(self, op_id: int, phase: str, text: str, state: str | None = None) -> None:
        async with self.sessions.begin() as session:
            op = await _get(session, op_id)
            if state is not None:
                op.state = state
            journal(session, op, self.clock(), phase, text)

    async def schedule_weekly(self) -> None:
        """Put the next weekly game day of each entry on the calendar (a day ahead)."""
        now = self.clock()
        for day in self.fleet.gamedays.weekly:
            at = next_weekly(now, day.day, day.time)
            if (at - now).total_seconds() > 86400:
                continue
            async with self.sessions.begin() as session:
                exists = (
                    await session.scalars(
                        select(Operation).where(
                            Operation.kind == "drill", Operation.region == day.region
                        )
                    )
                ).all()
                if any((o.detail or {}).get("at") == at.isoformat() for o in exists):
                    continue
                op = Operation(
                    kind="drill",
                    region=day.region,
                    origin=None,
                    state="scheduled",
                    requested_by="schedule",
                    reason=f"weekly game day ({day.day} {day.time} UTC)",
                    break_glass=[],
                    created_at=now,
                    updated_at=now,
                    channel=self.channel,
                    detail={"at": at.isoformat()},
                )
                session.add(op)
                await session.flush()
                journal(
                    session,
                    op,
                    now,
                    "scheduled",
                    f"weekly game day scheduled for {at:%a %Y-%m-%d %H:%M} UTC",
                    post=False,
                )

    async def _due(self) -> list[int]:
        """Scheduled drills: the notice ahead, then the start (preflight runs as usual)."""
        now = self.clock()
        touched: list[int] = []
        async with self.sessions.begin() as session:
            scheduled = await session.scalars(
                select(Operation).where(Operation.kind == "drill", Operation.state == "scheduled")
            )
            for op in scheduled:
                touched.append(op.id)
                at = datetime.fromisoformat(str((op.detail or {})["at"]))
                detail = dict(op.detail or {})
                notice = self.fleet.gamedays.notice
                if not detail.get("noticed") and (at - now).total_seconds() <= notice:
                    detail["noticed"] = True
                    journal(
                        session, op, now, "notice", f"drill of {op.region} starts at {at:%H:%M} UTC"
                    )
                if at <= now:
                    op.state = "applying"
                    journal(
                        session,
                        op,
                        now,
                        "starting",
                        f"the scheduled drill of {op.region} starts now",
                    )
                op.detail = detail
        return touched

    async def drive(self, notifier: OperationNotifier) -> None:
        """Start confirmed drills; recover drills a previous leader left mid-way; post.

        Each drill is handled on its own: one failing (or a failing post) never keeps another
        from being restored.
        """
        await self.schedule_weekly()
        due = await self._due()
        async with self.sessions() as session:
            ops = list(
                await session.scalars(
                    select(Operation).where(
                        Operation.kind == "drill", Operation.state.in_(("applying", *RUNNING))
                    )
                )
            )
        for op in ops:
            if op.id in self.tasks and not self.tasks[op.id].done():
                continue
            try:
                if op.state == "applying":
                    self.tasks[op.id] = asyncio.create_task(self._run_and_post(op.id, notifier))
                else:
                    await self._recover(op.id)
            except Exception:
                log.exception("drill %s: recovery failed; trying again", op.id)
        for op_id in {*due, *(op.id for op in ops)}:
            try:
                await post_owed(self.sessions, op_id, notifier)
            except Exception:
                log.exception("drill %s: could not post; trying again", op_id)

    async def _recover(self, op_id: int) -> None:
        """A drill with no task: the bot restarted, or lost the lease, during it.

        Put the pool back first; say so once, keeping the cause the drill had recorded.
        """
        async with self.sessions() as session:
            op = await _get(session, op_id)
        detail = op.detail or {}
        if not detail.get("recovering"):
            async with self.sessions.begin() as session:
                stored = await _get(session, op_id)
                stored.detail = {**(stored.detail or {}), "recovering": True}
                text = "the drill lost its driver (a restart): restoring the saved configuration"
                journal(session, stored, self.clock(), "interrupted", text)
        await self._restore(op)
        cause = detail.get("stopped")
        if cause:
            await self._finish(op_id, str(cause[0]), f"{cause[1]}; the pool is enabled again")
        else:
            await self._finish(
                op_id, "interrupted", "interrupted by a restart; the pool is enabled again"
            )

    async def _restore(self, op: Operation) -> None:
        assert self.loadbalancer is not None
        saved = (op.detail or {}).get("saved", {})
        pool_id = saved.get("pool_id")
        if pool_id is None:
            return  # nothing was changed
        await self.loadbalancer.set_pool_enabled(pool_id, bool(saved.get("enabled", True)))
        async with self.sessions.begin() as session:
            audit_change(session, await _get(session, op.id), self.clock(), f"restored {pool_id}")

    async def _finish(
        self, op_id: int, outcome: str, text: str, figures: dict[str, object] | None = None
    ) -> None:
        async with self.sessions.begin() as session:
            op = await _get(session, op_id)
            now = self.clock()
            op.state, op.finished_at = outcome, now
            op.detail = {**(op.detail or {}), "outcome": outcome, **(figures or {})}
            journal(session, op, now, outcome, f"{outcome.upper()}: {text}")

    async def preflight(self, op: Operation) -> list[str]:
        """Why the drill may not start now (empty: it may)."""
        assert self.loadbalancer is not None
        view = await self.loadbalancer.live_view(self.fleet.load_balancer.hostname)
        now = self.clock()
        async with self.sessions() as session:
            ops: list[InFlight] = await in_flight(session, self.fleet, now, besides=op.id)
            incident = (
                await session.scalars(select(Incident).where(Incident.closed_at.is_(None)))
            ).first()
            others = (
                await session.scalars(
                    select(Operation).where(
                        Operation.kind == "drill",
                        Operation.id != op.id,
                        Operation.state.in_(("applying", *RUNNING)),
                    )
                )
            ).first()
        reasons = []
        window = blocked_by(self.fleet.gamedays.blocked, now)
        if window is not None:
            reasons.append(f"a blocked window: {window}")
        if incident is not None:
            reasons.append(f"incident #{incident.id} is open")
        if others is not None:
            reasons.append(f"drill #{others.id} is running")
        a = assess(Proposal("drill", op.region), self.fleet, view, ops, now)
        reasons += [r.text for r in a.refusals]
        target = view.pool_by_name(self.fleet.regions[op.region].pool)
        if target is None or not target.enabled or target.healthy is False:
            reasons.append(f"the target pool of {op.region} is not healthy and enabled")
        receiving = {r.after for r in a.blast if r.moves}
        states = self.monitor_state()
        for region in receiving:
            pool = (
                view.pool_by_name(self.fleet.regions[region].pool)
                if region in self.fleet.regions
                else None
            )
            if pool is None or pool.healthy is False:
                reasons.append(f"the receiving pool {region} is not healthy")
            elif (
                states is not None
                and states.pools.get(region)
                and states.pools[region].state
                not in (
                    PoolState.HEALTHY,
                    PoolState.UNKNOWN,
                )
            ):
                reasons.append(
                    f"the bot's probes say the receiving pool {region} is "
                    f"{states.pools[region].state}"
                )
        return reasons

    def _vantages(self, geos: list[str]) -> tuple[list[str], str]:
        relays = [r.geo for r in self.fleet.relays if r.geo in geos]
        if relays:
            return relays, f"measured through the relays in {' '.join(relays)}"
        return [], "no relay in its geo regions: measured from the bot's location only"

    async def _sample(self, vantages: list[str]) -> dict[str, PublicCheck]:
        checks = await self.userview.check(budget=2.0)
        return {
            c.geo or "bot": c
            for c in checks
            if (c.geo in vantages) or (not vantages and c.geo is None)
        }

    async def _measure(
        self,
        op_id: int,
        vantages: list[str],
        done: Callable[[PublicCheck], bool],
        limit: float,
        guarded: bool = True,
    ) -> dict[str, float | None]:
        """Seconds until ``done`` holds for each vantage point; None if not within ``limit``."""
        started = time.monotonic()
        found: dict[str, float | None] = {}
        keys = vantages or ["bot"]
        while time.monotonic() - started < limit and len(found) < len(keys):
            if guarded:
                await self._check_cancel(op_id)
            for key, check in (await self._sample(vantages)).items():
                if key not in found and done(check):
                    found[key] = time.monotonic() - started
            await asyncio.sleep(self.fleet.operations.drill_sample)
        return {k: found.get(k) for k in keys}

    async def _check_cancel(self, op_id: int) -> None:
        async with self.sessions() as session:
            op = await _get(session, op_id)
            incident = (
                await session.scalars(select(Incident).where(Incident.closed_at.is_(None)))
            ).first()
        if (op.detail or {}).get("cancel_requested"):
            raise DrillStopped("aborted", f"cancelled by {(op.detail or {})['cancel_requested']}")
        if incident is not None:
            raise DrillStopped("interrupted", f"a real incident began (#{incident.id})")

    async def _run_and_post(self, op_id: int, notifier: OperationNotifier) -> None:
        operation_id.set(op_id)  # the task's own context: its log lines carry the drill's id
        try:
            await self._run(op_id, notifier)
        finally:
            try:
                await post_owed(self.sessions, op_id, notifier)
            except Exception:
                log.exception("could not post drill %s", op_id)

    async def _run(self, op_id: int, notifier: OperationNotifier) -> None:
        assert self.loadbalancer is not None
        lb = self.loadbalancer
        async with self.sessions() as session:
            op = await _get(session, op_id)
        region = op.region
        targets = self.fleet.targets
        try:
            reasons = await self.preflight(op)
            view = await lb.live_view(self.fleet.load_balancer.hostname)
        except Exception as exc:
            # Nothing has changed yet: say why and stop, rather than retry silently.
            await self._finish(op_id, "blocked", f"preflight could not run: {exc}")
            return
        pool = view.pool_by_name(self.fleet.regions[region].pool)
        if pool is None or not pool.enabled:
            reasons.append(f"the pool of {region} is already disabled: nothing to drill")
        if reasons or pool is None:
            await self._finish(op_id, "blocked", "preflight refused: " + "; ".join(reasons))
            return
        routes = routing_table(view.load_balancer, view.pools)
        geos = [g for g, r in routes.items() if r.pool_id == pool.id]
        # The pools that will take the traffic: the safeguards watch these during the hold.
        after = blast_radius(self.fleet, view, after_change(view, pool, None))
        receiving = sorted({r.after for r in after if r.moves})
        vantages, how = self._vantages(geos)
        async with self.sessions.begin() as session:
            stored = await _get(session, op_id)
            stored.state = "saving"
            stored.detail = {
                **(stored.detail or {}),
                "saved": {"pool_id": pool.id, "enabled": pool.enabled},
                "geos": geos,
                # Where its traffic will go: the watch keeps these moves out of incidents.
                "blast": [r.stored() for r in after],
            }
            journal(
                session,
                stored,
                self.clock(),
                "saved",
                f"saved the configuration; {region} serves {' '.join(geos)}; {how}",
            )
        figures: dict[str, object] = {}
        rto: dict[str, float | None] = {}
        outcome, why = "succeeded", ""
        try:
            await self._note(op_id, "disabling", f"disabling pool {pool.name}", state="disabling")
            await lb.set_pool_enabled(pool.id, False)
            async with self.sessions.begin() as session:
                stored = await _get(session, op_id)
                stored.applied_at = self.clock()  # the settle time after a drill counts from here
                audit_change(session, stored, self.clock(), f"disabled {pool.name}")
            await self._note(
                op_id,
                "measuring_rto",
                "disabled; measuring the RTO as users see it",
                state="measuring_rto",
            )
            rto = await self._measure(
                op_id,
                vantages,
                lambda c: c.ok and c.region not in (None, region),
                limit=targets.rto * 2,
            )
            figures["rto"] = rto
            worst = max((v for v in rto.values() if v is not None), default=None)
            missing = [k for k, v in rto.items() if v is None]
            await self._note(
                op_id,
                "rto",
                f"RTO {_figures(rto)} (target < {targets.rto:g} s)",
                state="holding",
            )
            if worst is not None:
                metrics.DRILL_RTO.labels(region).observe(worst)
            if missing or worst is None or worst >= targets.rto:
                outcome, why = "failed", "the RTO target was missed"
            hold_until = time.monotonic() + self.fleet.operations.drill_hold
            while time.monotonic() < hold_until:
                await self._check_cancel(op_id)
                states = self.monitor_state()
                for name in receiving:
                    track = states.pools.get(name) if states else None
                    if track is not None and track.state in (PoolState.DOWN, PoolState.DEGRADED):
                        raise DrillStopped(
                            "aborted", f"safeguard: the receiving pool {name} is {track.state}"
                        )
                await asyncio.sleep(0.5)
        except DrillStopped as stop:
            outcome, why = stop.outcome, str(stop)
        except Exception as exc:
            outcome, why = "aborted", f"error: {exc}"
            log.exception("drill %s failed", op_id)
        finally:
            # Restore always runs, first of all, from what is in memory: if the database is
            # what failed, the pool must still come back. A failed call leaves the phase for
            # the next pass (recovery) to retry.
            await lb.set_pool_enabled(pool.id, True)
            try:
                async with self.sessions.begin() as session:
                    stored = await _get(session, op_id)
                    stored.state, stored.restored_at = "restoring", self.clock()
                    if why:
                        stored.detail = {**(stored.detail or {}), "stopped": [outcome, why]}
                        journal(session, stored, self.clock(), "stopping", f"stopping: {why}")
                    audit_change(session, stored, self.clock(), f"restored {pool.name}")
                    journal(
                        session,
                        stored,
                        self.clock(),
                        "restoring",
                        "restored the saved configuration",
                    )
            except Exception:
                log.exception("drill %s: restored, but could not record it", op_id)
        await self._note(
            op_id,
            "measuring_rejoin",
            f"re-enabled; measuring the rejoin of {' '.join(geos)}",
            state="measuring_rejoin",
        )
        rejoin = await self._measure(
            op_id,
            vantages,
            lambda c: c.ok and c.region == region,
            limit=targets.rejoin * 2,
            guarded=False,
        )
        figures["rejoin"] = rejoin
        slowest = max((v for v in rejoin.values() if v is not None), default=None)
        if outcome == "succeeded" and (slowest is None or slowest >= targets.rejoin):
            outcome, why = "failed", "the rejoin target was missed"
        text = f"RTO {_figures(rto)}; rejoin {_figures(rejoin)}"
        await self._finish(op_id, outcome, (why + "; " if why else "") + text, figures)
        await post_owed(self.sessions, op_id, notifier)

    async def cancel(self, user: str) -> str:
        async with self.sessions.begin() as session:
            op = (
                await session.scalars(
                    select(Operation).where(
                        Operation.kind == "drill", Operation.state.in_(("applying", *RUNNING))
                    )
                )
            ).first()
            if op is None:
                op = (
                    await session.scalars(
                        select(Operation)
                        .where(Operation.kind == "drill", Operation.state == "scheduled")
                        .order_by(Operation.id)
                    )
                ).first()
                if op is None:
                    return "No drill is running or scheduled."
                op.state, op.finished_at = "cancelled", self.clock()
                journal(session, op, self.clock(), "cancelled", f"cancelled by {user}")
                return f"The scheduled drill #{op.id} of {op.region} is cancelled."
            op.detail = {**(op.detail or {}), "cancel_requested": user}
            journal(session, op, self.clock(), "cancel", f"cancel asked by {user}")
            return f"Cancelling drill #{op.id} of {op.region}: it restores the pool and reports."

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
