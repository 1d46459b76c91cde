"""A drill's run: a game-day failover of one region, measured as users see it, always restored.

Named steps in order, each committed before the call it stands for: preflight, save, disable,
measure the RTO, hold (safeguards watch the receiving pools), restore, measure the rejoin, and
the outcome: SUCCEEDED / FAILED (a target missed) / ABORTED (a safeguard, a cancel, an error) /
INTERRUPTED (a real incident, or the bot restarted) / BLOCKED (preflight refused). The restore
runs in ``finally``; a drill found mid-way without its task (the bot restarted, or lost the lease,
or its task ended on an error) is put back by the same restore and marked as it was stopped.

The restore is retried inside the drill until Cloudflare takes it (bot.cloudflare_api.retry: not
the read breaker's cooldown), each failure's cause in the journal; a drill whose bot is stopping
tries a few times only, and leaves the rest to the next pass (recovery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.cloudflare_api.retry import RESTORE, RetryPolicy, retry_restore
from bot.errors import ProviderError
from bot.fleet import Fleet
from bot.incidents import open_incident
from bot.lbmodel import PoolInfo
from bot.logs import operation_id
from bot.monitor import MonitorState, PoolState
from bot.operations.calendar import due, schedule_weekly
from bot.operations.detail import Saved, Stop, detail_of, update_detail
from bot.operations.drain import reenable
from bot.operations.preflight import preflight
from bot.operations.state import OpState, move
from bot.operations.store import audit_change, journal, load, post_owed, running_drills
from bot.ports import LoadBalancer, OperationNotifier, UsersView
from bot.reads import PublicCheck
from bot.routing import routing_table
from bot.safety import after_change, blast_radius

log = logging.getLogger(__name__)
SAFEGUARD_EVERY = 0.5  # seconds between two looks at the receiving pools during the hold
STOP_WAIT = 10.0  # seconds a stopping bot gives its drills to restore and record it
BEFORE_RESTORE = (OpState.SAVING, OpState.DISABLING, OpState.MEASURING_RTO, OpState.HOLDING)
SAMPLE_BUDGET = 2.0  # seconds one sample of the users' view may take
STOPPING_ATTEMPTS = 3  # restore attempts a drill makes once its bot is stopping
RESTORE_NOTE_EVERY = 60.0  # seconds between two journal lines about one failing restore
RECOVERY_RESTORE = 6.0  # seconds a pass retries a recovered drill's restore before moving on


class DrillStopped(Exception):
    """A safeguard fired, the drill was cancelled, or a real incident began."""

    def __init__(self, outcome: OpState, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome


@dataclass
class Plan:
    """What a drill will do, decided once preflight passed."""

    op_id: int
    region: str
    pool_id: str
    pool_name: str
    enabled: bool  # as it was: what the restore puts back
    geos: list[str]  # the geo regions the pool serves
    receiving: list[str]  # the regions that take them: the safeguards watch these
    vantages: list[str]  # relays in those geo regions (empty: the bot's own location)
    how: str
    outcome: OpState = OpState.SUCCEEDED
    why: str = ""
    figures: dict[str, dict[str, float | None]] = field(default_factory=dict)


def _figures(found: dict[str, float | None]) -> str:
    if not found:
        return "not measured"
    return ", ".join(f"{k} {'—' if v is None else f'{v:.1f} s'}" for k, v in found.items())


def _failure(task: asyncio.Task[None] | None) -> BaseException | None:
    """What this bot's own task of a drill ended on (None: no task here, or no error)."""
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()


def _log_failure(task: asyncio.Task[None]) -> None:
    """A drill task that ended with an error: said in the log (its recovery follows)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("a drill task ended with an error; the next pass recovers it", exc_info=exc)


class Drills:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        loadbalancer: LoadBalancer | None,
        vantages: UsersView,
        clock: Callable[[], datetime],
        monitor_state: Callable[[], MonitorState | None],
        channel: str = "",
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.loadbalancer = loadbalancer
        self.vantages = vantages
        self.clock = clock
        self.monitor_state = monitor_state
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.channel = channel
        self.stopping = False
        # The drive's pass and a drill's own task both post what its journal owes: one at a time.
        self._posting: dict[int, asyncio.Lock] = {}
        self._restore_said: dict[int, float] = {}  # when a failing restore was last journalled
        self.restore_policy: RetryPolicy = RESTORE

    def lb(self) -> LoadBalancer:
        assert self.loadbalancer is not None, "drills need Cloudflare"
        return self.loadbalancer

    async def drive(self, notifier: OperationNotifier) -> None:
        """Start confirmed drills; recover drills a previous leader left mid-way; post.

        Each drill is handled on its own: one failing (or a failing post) never keeps another
        from being restored.
        """
        await schedule_weekly(self.fleet, self.sessions, self.clock, self.channel)
        touched = await due(self.fleet, self.sessions, self.clock)
        async with self.sessions() as session:
            ops = await running_drills(session)
        for op in ops:
            if op.id in self.tasks and not self.tasks[op.id].done():
                continue
            try:
                if op.state == OpState.STARTING:
                    task = asyncio.create_task(self._run_and_post(op.id, notifier))
                    task.add_done_callback(_log_failure)
                    self.tasks[op.id] = task
                else:
                    await self._recover(op.id, _failure(self.tasks.get(op.id)))
            except Exception:
                log.exception("drill %s: recovery failed; trying again", op.id)
        for op_id in {*touched, *(op.id for op in ops)}:
            try:
                await self._post(op_id, notifier)
            except Exception:
                log.exception("drill %s: could not post; trying again", op_id)

    async def _post(self, op_id: int, notifier: OperationNotifier) -> None:
        async with self._posting.setdefault(op_id, asyncio.Lock()):
            await post_owed(self.sessions, op_id, notifier)

    async def stop(self) -> None:
        """Stop the running drills: each restores its pool and records why, then ends.

        They are asked to stop at their next look (cancelling a task in the middle of a database
        read can leave SQLite locked); one that does not stop within STOP_WAIT is cancelled, and
        its ``finally`` still puts the pool back.
        """
        self.stopping = True
        running = [t for t in self.tasks.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=STOP_WAIT)
            for task in late:
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.stopping = False

    # ------------------------------------------------------------------ the steps

    async def _note(self, op_id: int, phase: str, text: str, state: OpState | None = None) -> None:
        async with self.sessions.begin() as session:
            op = await load(session, op_id)
            if state is not None:
                move(op, state)
            journal(session, op, self.clock(), phase, text)

    async def _run_and_post(self, op_id: int, notifier: OperationNotifier) -> None:
        operation_id.set(op_id)  # the task's own context: its log lines carry the drill's id
        try:
            await self._run(op_id)
        finally:
            try:
                await self._post(op_id, notifier)
            except Exception:
                log.exception("could not post drill %s", op_id)

    async def _run(self, op_id: int) -> None:
        plan = await self._start(op_id)
        if plan is None:
            return
        await self._save(plan)
        try:
            await self._disable(plan)
            await self._measure_rto(plan)
            await self._hold(plan)
        except DrillStopped as stop:
            plan.outcome, plan.why = stop.outcome, str(stop)
        except Exception as exc:
            plan.outcome, plan.why = OpState.ABORTED, f"error: {exc}"
            log.exception("drill %s failed", op_id)
        finally:
            await self._restore(plan.op_id, plan.pool_id, plan.enabled, plan.outcome, plan.why)
        if self.stopping:  # no time to measure the rejoin: say what happened and end
            await self._finish(op_id, plan.outcome, f"{plan.why}; the pool is enabled again")
            return
        await self._measure_rejoin(plan)
        if self.stopping:
            plan.why = f"{plan.why}; " if plan.why else ""
            plan.why += "the bot stopped before the rejoin was measured"
        figures = plan.figures
        text = (
            f"RTO {_figures(figures.get('rto', {}))}; rejoin {_figures(figures.get('rejoin', {}))}"
        )
        await self._finish(op_id, plan.outcome, (plan.why + "; " if plan.why else "") + text)

    async def _start(self, op_id: int) -> Plan | None:
        """Preflight; the plan of the drill, or None when it is blocked (nothing changed)."""
        async with self.sessions() as session:
            op = await load(session, op_id)
        try:
            view = await self.lb().live_view(self.fleet.load_balancer.hostname)
            reasons = await preflight(
                self.fleet, self.sessions, view, self.clock(), self.monitor_state, op
            )
        except Exception as exc:
            # Nothing has changed yet: say why and stop, rather than retry silently.
            await self._finish(op_id, OpState.BLOCKED, f"preflight could not run: {exc}")
            return None
        pool = view.pool_by_name(self.fleet.regions[op.region].pool)
        if reasons or pool is None:
            await self._finish(op_id, OpState.BLOCKED, "preflight refused: " + "; ".join(reasons))
            return None
        routes = routing_table(view.load_balancer, view.pools)
        geos = [g for g, r in routes.items() if r.pool_id == pool.id]
        blast = blast_radius(self.fleet, view, after_change(view, pool, None))
        relays = [r.geo for r in self.fleet.relays if r.geo in geos]
        how = (
            f"measured through the relays in {' '.join(relays)}"
            if relays
            else "no relay in its geo regions: measured from the bot's location only"
        )
        plan = Plan(
            op_id, op.region, pool.id, pool.name, pool.enabled, geos,
            sorted({r.after for r in blast if r.moves}), relays, how,
        )  # fmt: skip
        async with self.sessions.begin() as session:
            # Where its traffic will go: the watch keeps these moves out of incidents.
            update_detail(await load(session, op_id), blast=[r.stored() for r in blast])
        return plan

    async def _save(self, plan: Plan) -> None:
        async with self.sessions.begin() as session:
            op = await load(session, plan.op_id)
            move(op, OpState.SAVING)
            update_detail(
                op, saved=Saved(pool_id=plan.pool_id, enabled=plan.enabled), geos=plan.geos
            )
            text = (
                f"saved the configuration; {plan.region} serves {' '.join(plan.geos)}; {plan.how}"
            )
            journal(session, op, self.clock(), "saved", text)

    async def _disable(self, plan: Plan) -> None:
        await self._note(
            plan.op_id, "disabling", f"disabling pool {plan.pool_name}", OpState.DISABLING
        )
        await self.lb().set_pool_enabled(plan.pool_id, False)
        async with self.sessions.begin() as session:
            op = await load(session, plan.op_id)
            op.applied_at = self.clock()  # the settle time after a drill counts from here
            audit_change(session, op, self.clock(), f"disabled {plan.pool_name}")

    async def _measure_rto(self, plan: Plan) -> None:
        await self._note(
            plan.op_id, "measuring_rto", "disabled; measuring the RTO as users see it",
            OpState.MEASURING_RTO,
        )  # fmt: skip
        target = self.fleet.targets.rto
        rto = await self._measure(
            plan, lambda c: c.ok and c.region not in (None, plan.region), limit=target * 2
        )
        plan.figures["rto"] = rto
        async with self.sessions.begin() as session:
            update_detail(await load(session, plan.op_id), rto=rto)
        worst = max((v for v in rto.values() if v is not None), default=None)
        text = f"RTO {_figures(rto)} (target < {target:g} s)"
        await self._note(plan.op_id, "rto", text, OpState.HOLDING)
        if worst is not None:
            metrics.DRILL_RTO.labels(plan.region).observe(worst)
        if any(v is None for v in rto.values()) or worst is None or worst >= target:
            plan.outcome, plan.why = OpState.FAILED, "the RTO target was missed"

    async def _hold(self, plan: Plan) -> None:
        """Keep the failover while the safeguards watch the pools that took the traffic."""
        hold_until = time.monotonic() + self.fleet.operations.drill_hold
        while time.monotonic() < hold_until:
            await self._check_cancel(plan.op_id)
            states = self.monitor_state()
            for name in plan.receiving:
                track = states.pools.get(name) if states else None
                if track is not None and track.state in (PoolState.DOWN, PoolState.DEGRADED):
                    raise DrillStopped(
                        OpState.ABORTED, f"safeguard: the receiving pool {name} is {track.state}"
                    )
            await asyncio.sleep(SAFEGUARD_EVERY)

    async def _restore(
        self,
        op_id: int,
        pool_id: str,
        enabled: bool,
        outcome: OpState,
        why: str,
        policy: RetryPolicy | None = None,
    ) -> None:
        """Put the saved configuration back: after the run (``finally``) and after a restart.

        The phase and the cause are committed before the call, so that a retry after a failed
        call keeps the real cause; but if the database is what failed, the call is made all the
        same, from what is in memory: the pool must come back. A failed call leaves the phase
        for the next pass (recovery) to retry.
        """
        try:
            async with self.sessions.begin() as session:
                op = await load(session, op_id)
                now = self.clock()
                if op.state in BEFORE_RESTORE:
                    move(op, OpState.RESTORING)
                if why:
                    update_detail(op, stopped=Stop(outcome=outcome, why=why))
                    journal(session, op, now, "stopping", f"stopping: {why}")
        except Exception:
            log.exception("drill %s: could not record the restore; restoring all the same", op_id)
        tries = 0
        if enabled:
            tries = await self._reenable(op_id, pool_id, policy or self.restore_policy)
        try:
            async with self.sessions.begin() as session:
                op = await load(session, op_id)
                now = self.clock()
                op.restored_at = now
                audit_change(session, op, now, f"restored {pool_id}")
                after = f" (after {tries} attempts)" if tries > 1 else ""
                journal(session, op, now, "restoring", f"restored the saved configuration{after}")
        except Exception:
            log.exception("drill %s: restored, but could not record it", op_id)

    async def _reenable(self, op_id: int, pool_id: str, policy: RetryPolicy) -> int:
        """Enable the pool, retried on ``policy`` until Cloudflare takes it (a few times only
        once the bot is stopping); each failure's cause in the journal, at most once a minute.
        Returns how many attempts it took."""
        made = [1]

        async def failed(exc: ProviderError, attempt: int, pause: float | None) -> None:
            made[0] = attempt + 1
            now = time.monotonic()
            last = self._restore_said.get(op_id)
            if pause is not None and last is not None and now - last < RESTORE_NOTE_EVERY:
                return
            self._restore_said[op_id] = now
            text = (
                f"the restore failed ({exc}): retrying until Cloudflare takes it"
                if pause is not None
                else f"the restore failed ({exc}); the bot is stopping: the next pass retries it"
            )
            try:
                await self._note(op_id, "restoring", text)
            except Exception:
                log.exception("drill %s: could not record the failed restore", op_id)

        def give_up(attempt: int) -> bool:
            return self.stopping and attempt >= STOPPING_ATTEMPTS

        async def retrying(write: Callable[[], Awaitable[PoolInfo]]) -> PoolInfo:
            return await retry_restore(write, policy, on_failure=failed, give_up=give_up)

        await reenable(self.lb(), pool_id, retrying=retrying)
        self._restore_said.pop(op_id, None)
        return made[0]

    async def _measure_rejoin(self, plan: Plan) -> None:
        text = f"re-enabled; measuring the rejoin of {' '.join(plan.geos)}"
        await self._note(plan.op_id, "measuring_rejoin", text, OpState.MEASURING_REJOIN)
        target = self.fleet.targets.rejoin
        rejoin = await self._measure(
            plan, lambda c: c.ok and c.region == plan.region, limit=target * 2, guarded=False
        )
        plan.figures["rejoin"] = rejoin
        async with self.sessions.begin() as session:
            update_detail(await load(session, plan.op_id), rejoin=rejoin)
        slowest = max((v for v in rejoin.values() if v is not None), default=None)
        if plan.outcome is OpState.SUCCEEDED and (slowest is None or slowest >= target):
            plan.outcome, plan.why = OpState.FAILED, "the rejoin target was missed"

    async def _finish(self, op_id: int, outcome: OpState, text: str) -> None:
        async with self.sessions.begin() as session:
            op = await load(session, op_id)
            now = self.clock()
            move(op, outcome)
            op.finished_at = now
            journal(session, op, now, outcome, f"{outcome.upper()}: {text}")

    # ------------------------------------------------------------------ measuring

    async def _sample(self, vantages: list[str]) -> dict[str, PublicCheck]:
        checks = await self.vantages.check(budget=SAMPLE_BUDGET)
        return {
            c.geo or "bot": c
            for c in checks
            if (c.geo in vantages) or (not vantages and c.geo is None)
        }

    async def _measure(
        self,
        plan: Plan,
        done: Callable[[PublicCheck], bool],
        limit: float,
        guarded: bool = True,
    ) -> dict[str, float | None]:
        """Seconds until ``done`` holds for each vantage point; None if not within ``limit``."""
        started = time.monotonic()
        found: dict[str, float | None] = {}
        keys = plan.vantages or ["bot"]
        while time.monotonic() - started < limit and len(found) < len(keys):
            if self.stopping and not guarded:
                break  # the bot is stopping: what was measured so far is what there is
            if guarded:
                await self._check_cancel(plan.op_id)
            for key, check in (await self._sample(plan.vantages)).items():
                if key not in found and done(check):
                    found[key] = time.monotonic() - started
            await asyncio.sleep(self.fleet.operations.drill_sample)
        return {k: found.get(k) for k in keys}

    async def _check_cancel(self, op_id: int) -> None:
        if self.stopping:
            raise DrillStopped(
                OpState.INTERRUPTED, "the bot stopped (a shutdown, or it lost its lease)"
            )
        async with self.sessions() as session:
            op = await load(session, op_id)
            incident = await open_incident(session)
        asked = detail_of(op).cancel_requested
        if asked:
            raise DrillStopped(OpState.ABORTED, f"cancelled by {asked}")
        if incident is not None:
            raise DrillStopped(OpState.INTERRUPTED, f"a real incident began (#{incident.id})")

    # ------------------------------------------------------------------ after a restart

    async def _recover(self, op_id: int, failure: BaseException | None = None) -> None:
        """A drill with no task: the bot restarted, or lost the lease, during it, or its task
        ended on ``failure`` (a restore Cloudflare did not take while the bot was stopping).

        Put the pool back first, with the same restore as the run's; say so once, keeping the
        cause the drill had recorded.
        """
        async with self.sessions() as session:
            op = await load(session, op_id)
        detail = detail_of(op)
        if not detail.recovering:
            async with self.sessions.begin() as session:
                stored = await load(session, op_id)
                update_detail(stored, recovering=True)
                text = (
                    f"the drill's run ended on an error ({failure}): restoring the saved "
                    "configuration"
                    if failure is not None
                    else "the drill lost its driver (a restart): restoring the saved configuration"
                )
                journal(session, stored, self.clock(), "interrupted", text)
        if detail.saved is not None:  # else nothing was changed
            # In the pass: retried a few seconds, then the other drills have their turn.
            await self._restore(
                op_id,
                detail.saved.pool_id,
                detail.saved.enabled,
                OpState.INTERRUPTED,
                "",
                self.restore_policy.bounded(within=RECOVERY_RESTORE),
            )
        cause = detail.stopped
        if cause is not None:
            await self._finish(
                op_id, OpState(cause.outcome), f"{cause.why}; the pool is enabled again"
            )
        else:
            await self._finish(
                op_id, OpState.INTERRUPTED, "interrupted by a restart; the pool is enabled again"
            )
