"""The drain driver, run by the lease holder: apply, expire, restore, watch the rejoin, post.

Each phase is committed before the load balancer call it stands for, so a restarted bot finishes
what a crashed one began: an expired drain is restored, an interrupted apply is applied or undone.

Cloudflare is read only when a step is due (applying, restoring, watching the rejoin): an active
drain waiting for its expiry costs no API call. Restores go first in a pass, do not wait for a
read that fails (the pool's id is kept at apply), are sent past the read circuit breaker and are
retried on their own policy (bot.cloudflare_api.retry) until Cloudflare takes them; the journal
says why one has not landed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cloudflare_api.retry import RESTORE, RetryPolicy, retry_restore, transient
from bot.db.models import Operation
from bot.errors import ProviderError
from bot.fleet import Fleet
from bot.lbmodel import PoolInfo
from bot.logs import operation_id
from bot.operations.detail import Saved, detail_of, update_detail
from bot.operations.state import PENDING, OpState, move
from bot.operations.store import audit_change, journal, load, open_drains, post_owed
from bot.ports import LoadBalancer, OperationNotifier
from bot.routing import routing_table
from bot.safety import BlastRow, after_change, blast_radius

log = logging.getLogger(__name__)
ERROR_NOTE_EVERY = 60.0  # seconds between two error notes in one operation's thread
# How long one pass keeps retrying a restore before it lets the other drains have their turn;
# the next pass (a second later) carries on where it stopped.
RESTORE_PASS = 6.0
# Runs one write that restores, on a retry policy (or once, when there is none).
Retrying = Callable[[Callable[[], Awaitable[PoolInfo]]], Awaitable[PoolInfo]]


async def _once(write: Callable[[], Awaitable[PoolInfo]]) -> PoolInfo:
    return await write()


async def reenable(
    lb: LoadBalancer,
    pool_id: str,
    origin: str | None = None,
    origins_too: bool = False,
    retrying: Retrying | None = None,
) -> None:
    """Put a pool (or one origin of it) back in rotation; with ``origins_too``, every origin of
    the pool as well (a pool disabled outside the bot may have had its origins switched off).
    Each write goes through ``retrying`` (a restore's retry policy)."""
    run = retrying or _once
    if origin is not None:
        await run(lambda: lb.set_origin_enabled(pool_id, origin, True))
        return
    pool = await run(lambda: lb.set_pool_enabled(pool_id, True))
    if origins_too:
        for each in pool.origins:
            if not each.enabled:
                await run(partial(lb.set_origin_enabled, pool_id, each.name, True))


class DrainDriver:
    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        loadbalancer: LoadBalancer | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.loadbalancer = loadbalancer
        self.clock = clock
        self.restore_policy: RetryPolicy = RESTORE.bounded(within=RESTORE_PASS)
        # Failed attempts of each restore so far: the pauses carry on from pass to pass.
        self._restore_attempts: dict[int, int] = {}

    @property
    def lb(self) -> LoadBalancer:
        assert self.loadbalancer is not None, "drains need Cloudflare"
        return self.loadbalancer

    async def drive(self, notifier: OperationNotifier) -> None:
        """One pass over the drains that are changing or in force."""
        if self.loadbalancer is None:
            return  # without Cloudflare nothing can have been drained
        async with self.sessions() as session:
            ops = [op for op in await open_drains(session) if op.state not in PENDING]
        now = self.clock()
        # Restores first: the writes that put pools back go before any other call.
        ops.sort(key=lambda op: not _restore_due(op, now))
        for op in ops:
            operation_id.set(op.id)
            # One operation's failure must not stop the others' expiry and restore.
            try:
                await self._step(op.id)
            except ProviderError as exc:
                log.warning("drain %s: %s", op.id, exc)
                await self._error_note(op.id, f"Cloudflare: {exc}; trying again")
            except Exception:
                log.exception("drain %s: step failed; trying again", op.id)
            try:
                await post_owed(self.sessions, op.id, notifier)
            except Exception:
                log.exception("drain %s: could not post; trying again", op.id)

    async def _error_note(self, op_id: int, text: str) -> None:
        """Say an error in the thread, at most once a minute per operation."""
        now = self.clock()
        async with self.sessions.begin() as session:
            stored = await load(session, op_id)
            last = detail_of(stored).last_error_at
            if last is not None and (now - last).total_seconds() < ERROR_NOTE_EVERY:
                return
            update_detail(stored, last_error_at=now)
            journal(session, stored, now, "error", text)

    async def _step(self, op_id: int) -> None:
        async with self.sessions() as session:
            op = await load(session, op_id)
        now = self.clock()
        if op.state == OpState.APPLYING:
            view = await self.lb.live_view(self.fleet.load_balancer.hostname)
            pool = view.pool_by_name(self.fleet.regions[op.region].pool)
            if pool is None:
                raise ProviderError(f"pool of {op.region} not found")
            # The blast radius of now, not of when it was asked: the watch keeps these moves,
            # and only these, out of incidents.
            blast = blast_radius(self.fleet, view, after_change(view, pool, op.origin))
            await self._apply(op, pool, blast)
        elif op.state == OpState.ACTIVE and op.expires_at is not None and op.expires_at <= now:
            async with self.sessions.begin() as session:
                stored = await load(session, op_id)
                move(stored, OpState.RESTORING)
                journal(session, stored, now, "expired", "the drain expired: restoring it")
            await self._restore(op)
        elif op.state == OpState.RESTORING:
            await self._restore(op)
        elif op.state == OpState.REJOINING:
            await self._watch_rejoin(op)
        # ACTIVE until its expiry: nothing is due, nothing is read.

    async def _pool_id(self, op: Operation) -> str:
        """The drained pool's id, as the view (usually the cache) has it; when Cloudflare's
        reads fail for a reason that passes (down, the read breaker open, the budget kept for
        restores) the id kept when the drain was applied: a failing read never holds a restore
        back. Without a kept id (a pool disabled outside the bot) the read is needed."""
        saved = detail_of(op).saved
        try:
            view = await self.lb.live_view(self.fleet.load_balancer.hostname)
        except ProviderError as exc:
            if saved is None or not transient(exc):
                raise
            log.info("drain %s: restoring without a read (%s)", op.id, exc)
            return saved.pool_id
        pool = view.pool_by_name(self.fleet.regions[op.region].pool)
        if pool is None:
            raise ProviderError(f"pool of {op.region} not found")
        return pool.id

    async def _apply(self, op: Operation, pool: PoolInfo, blast: list[BlastRow]) -> None:
        async with self.sessions.begin() as session:
            update_detail(
                await load(session, op.id),
                blast=[r.stored() for r in blast],
                saved=Saved(pool_id=pool.id),  # what the restore enables, without a read
            )
        if op.origin:
            await self.lb.set_origin_enabled(pool.id, op.origin, False)
        else:
            await self.lb.set_pool_enabled(pool.id, False)
        now = self.clock()
        async with self.sessions.begin() as session:
            stored = await load(session, op.id, lock=True)
            length = detail_of(stored).length or self.fleet.operations.drain_default
            stored.applied_at = now
            stored.expires_at = now + timedelta(seconds=length)
            audit_change(session, stored, now, f"disabled {op.origin or pool.name}")
            if stored.state != OpState.APPLYING:
                # A restore was asked while the call was in flight: it wins, next pass.
                journal(session, stored, now, "active", "drained, and a restore is already asked")
            else:
                move(stored, OpState.ACTIVE)
                text = f"drained; restores itself at {stored.expires_at:%H:%M:%S} UTC"
                journal(session, stored, now, "active", text)

    async def _restore(self, op: Operation) -> None:
        pool_id = await self._pool_id(op)

        async def failed(exc: ProviderError, attempt: int, pause: float | None) -> None:
            self._restore_attempts[op.id] = attempt
            await self._error_note(
                op.id, f"the restore failed ({exc}): retrying until Cloudflare takes it"
            )

        async def retrying(write: Callable[[], Awaitable[PoolInfo]]) -> PoolInfo:
            return await retry_restore(
                write,
                self.restore_policy,
                on_failure=failed,
                attempt=self._restore_attempts.get(op.id, 0),
            )

        await reenable(
            self.lb, pool_id, op.origin, origins_too=detail_of(op).outside, retrying=retrying
        )
        tries = self._restore_attempts.pop(op.id, 0)
        now = self.clock()
        async with self.sessions.begin() as session:
            stored = await load(session, op.id)
            move(stored, OpState.REJOINING)
            stored.restored_at = now
            audit_change(session, stored, now, f"enabled {op.origin or pool_id}")
            after = f" after {tries + 1} attempts" if tries else ""
            text = f"re-enabled{after}; watching for its regions to return"
            journal(session, stored, now, "restored", text)

    async def _watch_rejoin(self, op: Operation) -> None:
        view = await self.lb.live_view(self.fleet.load_balancer.hostname)
        routes = routing_table(view.load_balancer, view.pools)
        pool = view.pool_by_name(self.fleet.regions[op.region].pool)
        home = [g for g, r in routes.items() if r.preferred == (pool.id if pool else None)]
        back = pool is not None and all(
            routes[g].pool_id == pool.id and routes[g].healthy for g in home
        )
        now = self.clock()
        waited = (now - (op.restored_at or now)).total_seconds()
        if back or waited > self.fleet.operations.rejoin_timeout:
            async with self.sessions.begin() as session:
                stored = await load(session, op.id)
                move(stored, OpState.RESTORED)
                stored.finished_at = now
                text = (
                    f"serves {' '.join(home)} again, {waited:.0f} s after the restore"
                    if back
                    else f"not serving {' '.join(home)} after {waited:.0f} s: see /failover status"
                )
                journal(session, stored, now, "rejoined" if back else "rejoin-timeout", text)


def _restore_due(op: Operation, now: datetime) -> bool:
    """Whether ``op``'s pass puts a pool back: restoring, or an active drain that expired."""
    if op.state == OpState.RESTORING:
        return True
    return op.state == OpState.ACTIVE and op.expires_at is not None and op.expires_at <= now
