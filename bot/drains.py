"""Drains: take a region (or one origin) out of rotation safely, with an expiry and an audit trail.

Commands propose, confirm, approve, extend, cancel and restore; they only write the operation's
phase. The lease holder's driver makes the load balancer calls, each after committing the phase
it stands for, so a restarted bot finishes what a crashed one began (an expired drain is restored,
an interrupted apply is applied or undone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry, JournalEntry, Operation
from bot.errors import FailoverBotError, ProviderError
from bot.fleet import Fleet
from bot.loadbalancer.port import LoadBalancer
from bot.logs import operation_id
from bot.notifier import OperationNotifier, OperationView
from bot.routing import routing_table
from bot.safety import (
    Assessment,
    BlastRow,
    InFlight,
    Proposal,
    Rule,
    after_change,
    assess,
    blast_radius,
)

log = logging.getLogger(__name__)

PENDING = ("awaiting_confirmation", "awaiting_approval")
CHANGING = ("applying", "restoring")
HOLDING = ("active", "rejoining")
# A drill's running phases (bot/drills.py drives them).
DRILLING = ("saving", "disabling", "measuring_rto", "holding", "measuring_rejoin")
OPEN = PENDING + CHANGING + HOLDING


class OperationRefused(FailoverBotError):
    """The operation may not proceed; the message says why."""


@dataclass(frozen=True)
class Proposed:
    operation: Operation | None
    assessment: Assessment


def view_of(op: Operation) -> OperationView:
    return OperationView(
        id=op.id,
        kind=op.kind,
        region=op.region,
        origin=op.origin,
        state=op.state,
        requested_by=op.requested_by,
        approved_by=op.approved_by,
        reason=op.reason,
        break_glass=list(op.break_glass or []),
        applied_at=op.applied_at,
        expires_at=op.expires_at,
        blast=[BlastRow.from_stored(row) for row in (op.detail or {}).get("blast", [])],
        lines=list((op.detail or {}).get("lines", [])),
    )


def audit_change(session: AsyncSession, op: Operation, now: datetime, what: str) -> None:
    """A change made to the load balancer, in the audit trail beside the commands that asked."""
    glass = f"; break-glass: {', '.join(op.break_glass)}" if op.break_glass else ""
    session.add(
        AuditEntry(
            at=now,
            kind="change",
            user_id=op.requested_by,
            user_name="",
            team_id="",
            channel_id=op.channel,
            text=f"{op.kind} #{op.id}: {what}",
            outcome="ok",
            detail=f"reason: {op.reason}{glass}",
            error_id=None,
            seconds=0.0,
        )
    )


def journal(
    session: AsyncSession, op: Operation, now: datetime, phase: str, text: str, post: bool = True
) -> None:
    session.add(JournalEntry(operation_id=op.id, at=now, phase=phase, text=text, posted=not post))
    op.updated_at = now


async def in_flight(
    session: AsyncSession, fleet: Fleet, now: datetime, besides: int | None = None
) -> list[InFlight]:
    """Operations that count for the safety rules: changing, holding, or changed within settle."""
    since = now - timedelta(seconds=fleet.operations.settle)
    rows = await session.scalars(
        select(Operation).where(
            (Operation.state.in_(CHANGING + HOLDING + DRILLING)) | (Operation.finished_at > since)
        )
    )
    out = []
    for op in rows:
        if op.id == besides:
            continue
        changed = op.restored_at or op.applied_at
        if op.state in CHANGING:
            changed = None
        finished = op.finished_at is not None
        out.append(InFlight(op.kind, op.region, changed, finished))
    return out


class Drains:
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

    def _lb(self) -> LoadBalancer:
        if self.loadbalancer is None:
            raise OperationRefused(
                "Cloudflare is not configured: set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID and "
                "CLOUDFLARE_ZONE_ID to drain or drill."
            )
        return self.loadbalancer

    async def assess(self, proposal: Proposal, break_glass: Collection[Rule] = ()) -> Assessment:
        view = await self._lb().live_view(self.fleet.load_balancer.hostname)
        now = self.clock()
        async with self.sessions() as session:
            ops = await in_flight(session, self.fleet, now)
        return assess(proposal, self.fleet, view, ops, now, break_glass)

    async def propose(
        self,
        proposal: Proposal,
        reason: str,
        length: float,
        user: str,
        break_glass: Collection[Rule],
        extra: dict[str, object] | None = None,
    ) -> Proposed:
        a = await self.assess(proposal, break_glass)
        if not a.allowed:
            return Proposed(None, a)
        now = self.clock()
        async with self.sessions.begin() as session:
            op = Operation(
                kind=proposal.kind,
                region=proposal.region,
                origin=proposal.origin,
                state="awaiting_confirmation",
                requested_by=user,
                reason=reason,
                break_glass=sorted(
                    str(r) for r in break_glass if r in {x.rule for x in a.overridden}
                ),
                created_at=now,
                updated_at=now,
                channel=self.channel,
                detail={
                    "length": length,
                    "blast": [r.stored() for r in a.blast],
                    "needs_approval": a.needs_approval,
                    **(extra or {}),
                },
            )
            session.add(op)
            await session.flush()
            journal(session, op, now, "proposed", f"proposed by {user}: {reason}", post=False)
        return Proposed(op, a)

    async def _load(self, session: AsyncSession, op_id: int, lock: bool = False) -> Operation:
        # On PostgreSQL the row is locked for the writing transaction (SQLite locks the file).
        op = await session.get(Operation, op_id, with_for_update=lock)
        if op is None:
            raise OperationRefused(f"There is no operation {op_id}.")
        return op

    async def _advance(
        self, op_id: int, expected: str, who: Callable[[Operation], str | None], user: str
    ) -> Operation:
        """Move a pending operation on, checked again against the state of now.

        The state is compared again inside the writing transaction, so a double click or a
        click racing a cancel advances it once at most.
        """
        async with self.sessions() as session:
            op = await self._load(session, op_id)
        if op.state != expected:
            raise OperationRefused(f"This {op.kind} is {op.state.replace('_', ' ')} now.")
        if (refusal := who(op)) is not None:
            raise OperationRefused(refusal)
        breaking = {Rule(r) for r in op.break_glass}
        a = await self.assess(Proposal(op.kind, op.region, op.origin), breaking)
        go = "scheduled" if (op.detail or {}).get("at") else "applying"
        if not a.allowed:
            new = "cancelled"
        elif expected == "awaiting_confirmation":
            new = "awaiting_approval" if a.needs_approval else go
        else:
            new = go
        why = a.noop or "; ".join(r.text for r in a.refusals)
        async with self.sessions.begin() as session:
            now = self.clock()
            values: dict[str, object] = {"state": new, "updated_at": now}
            if new == "cancelled":
                values["finished_at"] = now
            elif expected == "awaiting_approval":
                values["approved_by"] = user
            # Compare-and-set: of two clicks at once, exactly one moves it on.
            moved = await session.execute(
                update(Operation)
                .where(Operation.id == op_id, Operation.state == expected)
                .values(**values)
            )
            op = await self._load(session, op_id)
            if moved.rowcount:  # type: ignore[attr-defined]
                text = {
                    "cancelled": f"refused when {user} pressed: {why}",
                    "awaiting_approval": f"confirmed by {user}; waiting for an approver",
                }.get(
                    new,
                    f"{'approved' if expected == 'awaiting_approval' else 'confirmed'} by {user}",
                )
                journal(session, op, now, new, text, post=False)
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise OperationRefused(f"This {op.kind} is {op.state.replace('_', ' ')} now.")
        if new == "cancelled":
            raise OperationRefused(
                f"Things changed since it was asked, so it is refused now: {why}."
            )
        return op

    async def confirm(self, op_id: int, user: str) -> Operation:
        """The requester's confirm button."""

        def requester_only(op: Operation) -> str | None:
            return (
                None
                if op.requested_by == user
                else "Only the operator who asked for it may confirm it."
            )

        return await self._advance(op_id, "awaiting_confirmation", requester_only, user)

    async def approve(self, op_id: int, user: str) -> Operation:
        """An approver's button: never the requester's own."""

        def not_requester(op: Operation) -> str | None:
            return (
                "An approver other than the requester must approve."
                if op.requested_by == user
                else None
            )

        return await self._advance(op_id, "awaiting_approval", not_requester, user)

    async def active(self) -> list[Operation]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Operation)
                .where(Operation.kind == "drain", Operation.state.in_(OPEN))
                .order_by(Operation.id)
            )
            return list(rows)

    async def find_open(self, session: AsyncSession, region: str) -> Operation | None:
        rows = await session.scalars(
            select(Operation).where(
                Operation.kind == "drain", Operation.region == region, Operation.state.in_(OPEN)
            )
        )
        return rows.first()

    async def restore(self, region: str, user: str) -> str:
        async with self.sessions.begin() as session:
            op = await self.find_open(session, region)
            now = self.clock()
            if op is None:
                lb = self._lb()
                view = await lb.live_view(self.fleet.load_balancer.hostname)
                pool = view.pool_by_name(self.fleet.regions[region].pool)
                if pool is not None and pool.enabled and all(o.enabled for o in pool.origins):
                    return f"{region} is not drained: nothing to restore."
                # Disabled outside the bot: restore it all the same, and keep a record.
                op = Operation(
                    kind="drain", region=region, origin=None, state="restoring", requested_by=user,
                    reason="restore of a pool disabled outside the bot", break_glass=[],
                    created_at=now,
                    updated_at=now, channel=self.channel, detail={"outside": True},
                )  # fmt: skip
                session.add(op)
                await session.flush()
            elif op.state in PENDING:
                op.state, op.finished_at = "cancelled", now
                journal(
                    session,
                    op,
                    now,
                    "cancelled",
                    f"cancelled by {user} before it was applied",
                    post=False,
                )
                return f"The pending drain of {region} is cancelled; nothing had changed."
            elif op.state in ("restoring", "rejoining"):
                return f"{region} is already being restored."
            else:
                op.state = "restoring"
            journal(session, op, now, "restoring", f"restore asked by {user}")
        return f"Restoring {region}; the drain's thread will say when it serves its regions again."

    async def extend(self, region: str, length: float, user: str) -> str:
        async with self.sessions.begin() as session:
            op = await self.find_open(session, region)
            if op is None or op.state != "active" or op.expires_at is None or op.applied_at is None:
                return f"{region} has no active drain to extend."
            now = self.clock()
            limit = op.applied_at + timedelta(seconds=self.fleet.operations.drain_max)
            new = min(op.expires_at + timedelta(seconds=length), limit)
            op.expires_at = new
            journal(session, op, now, "extended", f"extended by {user} until {new:%H:%M:%S} UTC")
        capped = " (the maximum)" if new == limit else ""
        return f"The drain of {region} now restores itself at {new:%H:%M:%S} UTC{capped}."

    async def cancel_op(self, op_id: int, user: str) -> str:
        """The Cancel button of one proposal: only that operation, and only while pending."""
        async with self.sessions.begin() as session:
            op = await self._load(session, op_id, lock=True)
            if op.state not in PENDING:
                return f"This {op.kind} is {op.state.replace('_', ' ')}: nothing to cancel here."
            now = self.clock()
            op.state, op.finished_at = "cancelled", now
            journal(session, op, now, "cancelled", f"cancelled by {user}", post=False)
            return f"The {op.kind} of {op.region} is cancelled; nothing had changed."

    async def cancel(self, region: str, user: str) -> str:
        async with self.sessions.begin() as session:
            op = await self.find_open(session, region)
            if op is None:
                return f"{region} has no drain to cancel."
            if op.state not in PENDING:
                return f"The drain of {region} is {op.state}: use `/failover restore {region}`."
            now = self.clock()
            op.state, op.finished_at = "cancelled", now
            journal(session, op, now, "cancelled", f"cancelled by {user}", post=False)
        return f"The pending drain of {region} is cancelled; nothing had changed."

    # ------------------------------------------------------------------ the driver (lease holder)

    async def drive(self, notifier: OperationNotifier) -> None:
        """One pass: apply, expire, restore, watch rejoins, post what the journal owes."""
        async with self.sessions() as session:
            ops = list(
                await session.scalars(
                    select(Operation).where(
                        Operation.kind == "drain", Operation.state.in_(CHANGING + HOLDING)
                    )
                )
            )
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
            stored = await self._load(session, op_id)
            last = (stored.detail or {}).get("last_error_at")
            if last and (now - datetime.fromisoformat(last)).total_seconds() < 60:
                return
            stored.detail = {**(stored.detail or {}), "last_error_at": now.isoformat()}
            journal(session, stored, now, "error", text)

    async def _step(self, op_id: int) -> None:
        lb = self._lb()
        async with self.sessions() as session:
            op = await self._load(session, op_id)
        view = await lb.live_view(self.fleet.load_balancer.hostname)
        pool = view.pool_by_name(self.fleet.regions[op.region].pool)
        if pool is None:
            raise ProviderError(f"pool of {op.region} not found")
        now = self.clock()
        if op.state == "applying":
            # The blast radius of now, not of when it was asked: the watch keeps these moves,
            # and only these, out of incidents.
            blast = blast_radius(self.fleet, view, after_change(view, pool, op.origin))
            async with self.sessions.begin() as session:
                stored = await self._load(session, op_id)
                stored.detail = {**(stored.detail or {}), "blast": [r.stored() for r in blast]}
            if op.origin:
                await lb.set_origin_enabled(pool.id, op.origin, False)
            else:
                await lb.set_pool_enabled(pool.id, False)
            async with self.sessions.begin() as session:
                stored = await self._load(session, op_id, lock=True)
                length = float(
                    (stored.detail or {}).get("length") or self.fleet.operations.drain_default
                )
                stored.applied_at = now
                stored.expires_at = now + timedelta(seconds=length)
                audit_change(session, stored, now, f"disabled {op.origin or pool.name}")
                if stored.state != "applying":
                    # A restore was asked while the call was in flight: it wins, next pass.
                    journal(
                        session, stored, now, "active", "drained, and a restore is already asked"
                    )
                else:
                    stored.state = "active"
                    text = f"drained; restores itself at {stored.expires_at:%H:%M:%S} UTC"
                    journal(session, stored, now, "active", text)
        elif op.state == "active" and op.expires_at is not None and op.expires_at <= now:
            async with self.sessions.begin() as session:
                stored = await self._load(session, op_id)
                stored.state = "restoring"
                journal(session, stored, now, "expired", "the drain expired: restoring it")
            await self._restore_call(op, pool.id)
        elif op.state == "restoring":
            await self._restore_call(op, pool.id)
        elif op.state == "rejoining":
            await self._watch_rejoin(op)

    async def _restore_call(self, op: Operation, pool_id: str) -> None:
        lb = self._lb()
        if op.origin:
            await lb.set_origin_enabled(pool_id, op.origin, True)
        else:
            pool = await lb.set_pool_enabled(pool_id, True)
            if (op.detail or {}).get("outside"):
                # Disabled outside the bot: its origins may have been switched off too.
                for origin in pool.origins:
                    if not origin.enabled:
                        await lb.set_origin_enabled(pool_id, origin.name, True)
        now = self.clock()
        async with self.sessions.begin() as session:
            stored = await self._load(session, op.id)
            stored.state, stored.restored_at = "rejoining", now
            audit_change(session, stored, now, f"enabled {op.origin or pool_id}")
            journal(
                session, stored, now, "restored", "re-enabled; watching for its regions to return"
            )

    async def _watch_rejoin(self, op: Operation) -> None:
        view = await self._lb().live_view(self.fleet.load_balancer.hostname)
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
                stored = await self._load(session, op.id)
                stored.state, stored.finished_at = "restored", now
                text = (
                    f"serves {' '.join(home)} again, {waited:.0f} s after the restore"
                    if back
                    else f"not serving {' '.join(home)} after {waited:.0f} s: see /failover status"
                )
                journal(session, stored, now, "rejoined" if back else "rejoin-timeout", text)


async def post_owed(
    sessions: async_sessionmaker[AsyncSession], op_id: int, notifier: OperationNotifier
) -> None:
    """Post the operation's message (once) and what its journal owes to its thread."""
    async with sessions() as session:
        op = await _get(session, op_id)
        owed = list(
            await session.scalars(
                select(JournalEntry)
                .where(JournalEntry.operation_id == op_id, JournalEntry.posted.is_(False))
                .order_by(JournalEntry.id)
            )
        )
    if not owed:
        return
    view = view_of(op)
    ts = op.message_ts
    if ts is None:
        ts = await notifier.post_operation(op.channel, view)
        async with sessions.begin() as session:
            (await _get(session, op_id)).message_ts = ts
    for entry in owed:
        await notifier.post_operation_note(
            op.channel, ts, f"{entry.at:%H:%M:%S} UTC · {entry.text}"
        )
        async with sessions.begin() as session:
            stored = await session.get(JournalEntry, entry.id)
            if stored is not None:
                stored.posted = True
    await notifier.update_operation(op.channel, ts, view)


async def _get(session: AsyncSession, op_id: int) -> Operation:
    op = await session.get(Operation, op_id)
    if op is None:
        raise OperationRefused(f"There is no operation {op_id}.")
    return op
