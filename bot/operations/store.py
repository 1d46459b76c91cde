"""Operations in the database: loading them, their journal, the audit trail of the changes they
make, what counts as in flight for the safety rules, and the posts an operation owes its thread."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry, JournalEntry, Operation
from bot.errors import OperationRefused
from bot.fleet import Fleet
from bot.operations.detail import detail_of
from bot.operations.state import (
    DRAIN_CHANGING,
    DRAIN_OPEN,
    DRILL_RUNNING,
    IN_FLIGHT,
    OpKind,
    OpState,
)
from bot.ports import OperationNotifier
from bot.reads import OperationView
from bot.safety import InFlight


async def load(session: AsyncSession, op_id: int, lock: bool = False) -> Operation:
    # On PostgreSQL the row is locked for the writing transaction (SQLite locks the file).
    op = await session.get(Operation, op_id, with_for_update=lock)
    if op is None:
        raise OperationRefused(f"There is no operation {op_id}.")
    return op


def journal(
    session: AsyncSession, op: Operation, now: datetime, phase: str, text: str, post: bool = True
) -> None:
    """A line of the operation's journal; ``post`` puts it in the operation's thread too."""
    session.add(JournalEntry(operation_id=op.id, at=now, phase=phase, text=text, posted=not post))
    op.updated_at = now


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


async def in_flight(
    session: AsyncSession, fleet: Fleet, now: datetime, besides: int | None = None
) -> list[InFlight]:
    """Operations that count for the safety rules: changing, holding, or changed within settle."""
    since = now - timedelta(seconds=fleet.operations.settle)
    rows = await session.scalars(
        select(Operation).where(Operation.state.in_(IN_FLIGHT) | (Operation.finished_at > since))
    )
    out = []
    for op in rows:
        if op.id == besides:
            continue
        changing = op.state in DRAIN_CHANGING or op.state == OpState.STARTING
        changed = None if changing else (op.restored_at or op.applied_at)
        doing = "restored" if op.state == OpState.RESTORING else "applied"
        out.append(InFlight(op.kind, op.region, changed, op.finished_at is not None, op.id, doing))
    return out


async def open_drain(session: AsyncSession, region: str, lock: bool = False) -> Operation | None:
    """The region's drain pending or in force; ``lock``: its row locked for the writing
    transaction on PostgreSQL (SQLite locks the file), so that what was read is still so when
    the change is written."""
    query = select(Operation).where(
        Operation.kind == OpKind.DRAIN,
        Operation.region == region,
        Operation.state.in_(DRAIN_OPEN),
    )
    rows = await session.scalars(query.with_for_update() if lock else query)
    return rows.first()


async def _listed(
    session: AsyncSession, kind: OpKind, states: Collection[OpState]
) -> list[Operation]:
    rows = await session.scalars(
        select(Operation)
        .where(Operation.kind == kind, Operation.state.in_(states))
        .order_by(Operation.id)
    )
    return list(rows)


async def open_drains(session: AsyncSession) -> list[Operation]:
    return await _listed(session, OpKind.DRAIN, DRAIN_OPEN)


async def running_drills(session: AsyncSession) -> list[Operation]:
    return await _listed(session, OpKind.DRILL, DRILL_RUNNING)


async def scheduled_drills(session: AsyncSession) -> list[Operation]:
    return await _listed(session, OpKind.DRILL, {OpState.SCHEDULED})


def view_of(op: Operation) -> OperationView:
    detail = detail_of(op)
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
        blast=detail.blast_rows,
        created_at=op.created_at,
        at=detail.at,
        rto=detail.rto,
        rejoin=detail.rejoin,
    )


async def post_owed(
    sessions: async_sessionmaker[AsyncSession], op_id: int, notifier: OperationNotifier
) -> None:
    """Post the operation's message (once) and what its journal owes to its thread."""
    async with sessions() as session:
        op = await load(session, op_id)
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
            (await load(session, op_id)).message_ts = ts
    for entry in owed:
        await notifier.post_operation_note(
            op.channel, ts, f"{entry.at:%H:%M:%S} UTC · {entry.text}"
        )
        async with sessions.begin() as session:
            stored = await session.get(JournalEntry, entry.id)
            if stored is not None:
                stored.posted = True
    await notifier.update_operation(op.channel, ts, view)
