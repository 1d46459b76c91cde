"""What people do to operations: assess, propose, confirm, approve, cancel, restore, extend.

These only write an operation's state (the lease holder's drivers make the load balancer calls),
and return outcome values; the sentences are the views'. Every state change goes through the
transition table (bot/operations/state.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import JournalEntry, Operation
from bot.errors import OperationRefused
from bot.fleet import Fleet
from bot.operations.detail import OperationDetail, detail_of, update_detail
from bot.operations.state import (
    DRILL_RUNNING,
    PENDING,
    Cancelled,
    OpKind,
    OpState,
    Restore,
    check,
    move,
)
from bot.operations.store import (
    in_flight,
    journal,
    load,
    open_drain,
    open_drains,
    running_drills,
    scheduled_drills,
    view_of,
)
from bot.ports import LoadBalancer
from bot.reads import DrillRecord, JournalLine, OperationView
from bot.routing import healthy_enough
from bot.safety import Assessment, BlastRow, Proposal, Rule, assess, blast_radius


@dataclass(frozen=True)
class Proposed:
    operation: OperationView | None  # None: refused, or nothing to do
    assessment: Assessment


@dataclass(frozen=True)
class Cancel:
    outcome: Cancelled
    op: OperationView | None
    was: str = ""  # the state it was in


@dataclass(frozen=True)
class Extension:
    op: OperationView | None  # None: no drain; ``until`` None: the drain is not in force
    until: datetime | None = None
    capped: bool = False  # the drain's maximum was reached


class _Current:
    """No operation named: act on whichever is current when the change is written."""


CURRENT = _Current()


def _not_current(asked: int | _Current | None, now: Operation | None, region: str) -> str | None:
    """Why a command parsed while ``asked`` was the region's drain (None: there was none) may
    not act on ``now``, the drain current as it writes; None when they are the same (or when
    the caller named none, CURRENT).

    A command acts on what its sender saw: a drain confirmed since (or one that ended) is not
    what they meant, and a replayed or delayed command must not undo it."""
    if isinstance(asked, _Current) or (now.id if now else None) == asked:
        return None
    if asked is None:
        assert now is not None
        return (
            f"Drain #{now.id} of {region} was asked for after your command, which found no drain "
            f"there; nothing was done. Send the command again to act on #{now.id}."
        )
    if now is None:
        return (
            f"Drain #{asked} of {region} has ended since your command; nothing was done "
            "(`/failover drains` lists what is in force)."
        )
    return (
        f"Drain #{asked} of {region} has ended since your command and drain #{now.id} is the "
        f"current one; nothing was done. Send the command again to act on #{now.id}."
    )


class Operations:
    """The drains' and drills' workflow, as the commands and buttons use it."""

    def __init__(
        self,
        fleet: Fleet,
        sessions: async_sessionmaker[AsyncSession],
        loadbalancer: LoadBalancer | None,
        clock: Callable[[], datetime],
        channel: str,
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self.loadbalancer = loadbalancer
        self.clock = clock
        self.channel = channel

    def lb(self) -> LoadBalancer:
        if self.loadbalancer is None:
            raise OperationRefused(
                "Cloudflare is not configured: set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID and "
                "CLOUDFLARE_ZONE_ID to drain or drill."
            )
        return self.loadbalancer

    async def assess(self, proposal: Proposal, break_glass: Collection[Rule] = ()) -> Assessment:
        view = await self.lb().live_view(self.fleet.load_balancer.hostname)
        now = self.clock()
        async with self.sessions() as session:
            ops = await in_flight(session, self.fleet, now)
        return assess(proposal, self.fleet, view, ops, now, break_glass)

    async def propose(
        self,
        proposal: Proposal,
        reason: str,
        user: str,
        break_glass: Collection[Rule] = (),
        length: float | None = None,
        at: datetime | None = None,
    ) -> Proposed:
        """An operation awaiting its requester's confirmation, when the rules allow it."""
        a = await self.assess(proposal, break_glass)
        if not a.allowed:
            return Proposed(None, a)
        now = self.clock()
        detail = OperationDetail(
            length=length,
            blast=[r.stored() for r in a.blast],
            needs_approval=a.needs_approval,
            at=at,
        )
        async with self.sessions.begin() as session:
            op = Operation(
                kind=proposal.kind,
                region=proposal.region,
                origin=proposal.origin,
                state=OpState.AWAITING_CONFIRMATION,
                requested_by=user,
                reason=reason,
                break_glass=sorted(
                    str(r) for r in break_glass if r in {x.rule for x in a.overridden}
                ),
                created_at=now,
                updated_at=now,
                channel=self.channel,
                detail=detail.model_dump(mode="json", exclude_defaults=True),
            )
            session.add(op)
            await session.flush()
            journal(session, op, now, "proposed", f"proposed by {user}: {reason}", post=False)
        return Proposed(view_of(op), a)

    async def _advance(
        self, op_id: int, expected: OpState, who: Callable[[Operation], str | None], user: str
    ) -> OperationView:
        """Move a pending operation on, checked again against the state of now.

        The state is compared again inside the writing transaction, so a double click or a
        click racing a cancel advances it once at most.
        """
        async with self.sessions() as session:
            op = await load(session, op_id)
        if op.state != expected:
            raise OperationRefused(f"This {op.kind} is {op.state.replace('_', ' ')} now.")
        if (refusal := who(op)) is not None:
            raise OperationRefused(refusal)
        breaking = {Rule(r) for r in op.break_glass}
        a = await self.assess(Proposal(op.kind, op.region, op.origin), breaking)
        if not a.allowed:
            new = OpState.CANCELLED
        elif expected is OpState.AWAITING_CONFIRMATION and a.needs_approval:
            new = OpState.AWAITING_APPROVAL
        elif detail_of(op).at is not None:
            new = OpState.SCHEDULED
        else:
            new = OpState.APPLYING if op.kind == OpKind.DRAIN else OpState.STARTING
        check(op.kind, expected, new)
        why = a.noop or "; ".join(r.text for r in a.refusals)
        async with self.sessions.begin() as session:
            now = self.clock()
            values: dict[str, object] = {"state": new, "updated_at": now}
            if new is OpState.CANCELLED:
                values["finished_at"] = now
            elif expected is OpState.AWAITING_APPROVAL:
                values["approved_by"] = user
            # Compare-and-set: of two clicks at once, exactly one moves it on.
            moved = await session.execute(
                update(Operation)
                .where(Operation.id == op_id, Operation.state == expected)
                .values(**values)
            )
            op = await load(session, op_id)
            if moved.rowcount:  # type: ignore[attr-defined]
                verb = "approved" if expected is OpState.AWAITING_APPROVAL else "confirmed"
                text = {
                    OpState.CANCELLED: f"refused when {user} pressed: {why}",
                    OpState.AWAITING_APPROVAL: f"confirmed by {user}; waiting for an approver",
                }.get(new, f"{verb} by {user}")
                journal(session, op, now, new, text, post=False)
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise OperationRefused(f"This {op.kind} is {op.state.replace('_', ' ')} now.")
        if new is OpState.CANCELLED:
            raise OperationRefused(
                f"Things changed since it was asked, so it is refused now: {why}."
            )
        return view_of(op)

    async def confirm(self, op_id: int, user: str) -> OperationView:
        """The requester's confirm button."""

        def requester_only(op: Operation) -> str | None:
            if op.requested_by == user:
                return None
            return "Only the operator who asked for it may confirm it."

        return await self._advance(op_id, OpState.AWAITING_CONFIRMATION, requester_only, user)

    async def approve(self, op_id: int, user: str) -> OperationView:
        """An approver's button: never the requester's own."""

        def not_requester(op: Operation) -> str | None:
            if op.requested_by == user:
                return "An approver other than the requester must approve."
            return None

        return await self._advance(op_id, OpState.AWAITING_APPROVAL, not_requester, user)

    # ------------------------------------------------------------------ cancel, restore, extend

    async def cancel(self, op_id: int | None, user: str) -> Cancel:
        """The one cancel: a pending or scheduled operation is dropped (nothing had changed); a
        running drill is asked to stop (it restores the pool and reports); anything else is not
        for cancelling (an applied drain is restored instead)."""
        if op_id is None:
            return Cancel(Cancelled.NOTHING, None)
        async with self.sessions.begin() as session:
            op = await load(session, op_id, lock=True)
            now, was = self.clock(), op.state
            if op.state in PENDING or op.state == OpState.SCHEDULED:
                move(op, OpState.CANCELLED)
                op.finished_at = now
                journal(session, op, now, "cancelled", f"cancelled by {user}", post=False)
                return Cancel(Cancelled.CANCELLED, view_of(op), was)
            if op.kind == OpKind.DRILL and op.state in DRILL_RUNNING:
                update_detail(op, cancel_requested=user)
                journal(session, op, now, "cancel", f"cancel asked by {user}")
                return Cancel(Cancelled.STOPPING, view_of(op), was)
            return Cancel(Cancelled.NOT_PENDING, view_of(op), was)

    async def drain_of(self, region: str) -> int | None:
        """The drain of ``region`` that is pending or in force, if any."""
        async with self.sessions() as session:
            op = await open_drain(session, region)
        return op.id if op else None

    async def drill_to_cancel(self) -> int | None:
        """The running drill, else the next scheduled one."""
        async with self.sessions() as session:
            running = await running_drills(session)
            scheduled = await scheduled_drills(session)
        found = running or scheduled
        return found[0].id if found else None

    async def drains(self) -> list[OperationView]:
        async with self.sessions() as session:
            return [view_of(op) for op in await open_drains(session)]

    async def drills(self, limit: int = 10) -> list[OperationView]:
        """Drills, newest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Operation)
                .where(Operation.kind == OpKind.DRILL)
                .order_by(Operation.id.desc())
                .limit(limit)
            )
            return [view_of(op) for op in rows]

    async def operation(self, op_id: int) -> OperationView | None:
        """Any operation by its number: drains and drills share one numbering."""
        async with self.sessions() as session:
            op = await session.get(Operation, op_id)
            return view_of(op) if op is not None else None

    async def drill_record(self, op_id: int, earlier: int = 5) -> DrillRecord | None:
        """A drill with its journal and the region's earlier drills; None if there is none."""
        async with self.sessions() as session:
            op = await session.get(Operation, op_id)
            if op is None or op.kind != OpKind.DRILL:
                return None
            entries = await session.scalars(
                select(JournalEntry)
                .where(JournalEntry.operation_id == op.id)
                .order_by(JournalEntry.at, JournalEntry.id)
            )
            before = await session.scalars(
                select(Operation)
                .where(
                    Operation.kind == OpKind.DRILL,
                    Operation.region == op.region,
                    Operation.id < op.id,
                )
                .order_by(Operation.id.desc())
                .limit(earlier)
            )
            return DrillRecord(
                view_of(op),
                [JournalLine(e.at, e.text) for e in entries],
                [view_of(o) for o in before],
            )

    async def restore(
        self, region: str, user: str, asked: int | _Current | None = CURRENT
    ) -> tuple[Restore, OperationView | None]:
        """Put a drained region back: the driver re-enables it and watches it rejoin.

        ``asked``: the drain that was current when the command was parsed (None: none was);
        refused when another is current by now (OperationRefused)."""
        async with self.sessions.begin() as session:
            op = await open_drain(session, region, lock=True)
            now = self.clock()
            if (why := _not_current(asked, op, region)) is not None:
                raise OperationRefused(why)
            if op is None:
                view = await self.lb().live_view(self.fleet.load_balancer.hostname)
                pool = view.pool_by_name(self.fleet.regions[region].pool)
                if pool is not None and pool.enabled and all(o.enabled for o in pool.origins):
                    return Restore.NOT_DRAINED, None
                # Disabled outside the bot: restore it all the same, and keep a record.
                op = Operation(
                    kind=OpKind.DRAIN, region=region, origin=None, state=OpState.RESTORING,
                    requested_by=user, reason="restore of a pool disabled outside the bot",
                    break_glass=[], created_at=now, updated_at=now, channel=self.channel,
                    detail=OperationDetail(outside=True).model_dump(exclude_defaults=True),
                )  # fmt: skip
                session.add(op)
                await session.flush()
            elif op.state in PENDING:
                move(op, OpState.CANCELLED)
                op.finished_at = now
                text = f"cancelled by {user} before it was applied"
                journal(session, op, now, "cancelled", text, post=False)
                return Restore.CANCELLED, view_of(op)
            elif op.state in (OpState.RESTORING, OpState.REJOINING):
                return Restore.ALREADY, view_of(op)
            else:
                move(op, OpState.RESTORING)
            journal(session, op, now, "restoring", f"restore asked by {user}")
            return Restore.RESTORING, view_of(op)

    async def restore_preview(self, region: str) -> tuple[list[BlastRow], float | None]:
        """What re-enabling ``region`` would move back, and within how many seconds (None: no
        monitor, so never checked), without doing it."""
        view = await self.lb().live_view(self.fleet.load_balancer.hostname)
        pool = view.pool_by_name(self.fleet.regions[region].pool)
        if pool is None:
            raise OperationRefused(f"The pool of {region} is not in the account.")
        origins = tuple(replace(o, enabled=True) for o in pool.origins)
        # A re-enabled pool gets no traffic until Cloudflare's first check of it; this is after
        # it, with the origins as Cloudflare last saw them (a failed one is still counted failed).
        up = healthy_enough([o.healthy is not False for o in origins], pool.minimum_origins)
        enabled = replace(pool, enabled=True, origins=origins, healthy=up)
        rows = blast_radius(self.fleet, view, {**view.pools, pool.id: enabled})
        if view.monitor is None:
            return rows, None
        return rows, view.monitor.interval + self.fleet.load_balancer.propagation

    async def extend(
        self, region: str, length: float, user: str, asked: int | _Current | None = CURRENT
    ) -> Extension:
        """Push a drain's expiry back; ``asked`` as for ``restore``."""
        async with self.sessions.begin() as session:
            op = await open_drain(session, region, lock=True)
            if (why := _not_current(asked, op, region)) is not None:
                raise OperationRefused(why)
            if op is None:
                return Extension(None)
            if op.state != OpState.ACTIVE or not (op.expires_at and op.applied_at):
                return Extension(view_of(op))
            now = self.clock()
            limit = op.applied_at + timedelta(seconds=self.fleet.operations.drain_max)
            new = min(op.expires_at + timedelta(seconds=length), limit)
            op.expires_at = new
            journal(session, op, now, "extended", f"extended by {user} until {new:%H:%M:%S} UTC")
            return Extension(view_of(op), new, new == limit)
