"""Reading back what the bot wrote, as an operator would look it up: an operation's state and
journal, the audit trail of changes, the incidents."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry, Incident, JournalEntry, Operation, TimelineEvent


async def operation(sessions: async_sessionmaker[AsyncSession], op_id: int) -> Operation:
    async with sessions() as session:
        op = await session.get(Operation, op_id)
    assert op is not None, f"no operation {op_id}"
    return op


async def journal(sessions: async_sessionmaker[AsyncSession], op_id: int) -> list[str]:
    """The operation's journal lines, in order."""
    return [text for _, text in await phases(sessions, op_id)]


async def phases(sessions: async_sessionmaker[AsyncSession], op_id: int) -> list[tuple[str, str]]:
    """(phase, text) of each journal line, in order."""
    async with sessions() as session:
        rows = await session.scalars(
            select(JournalEntry).where(JournalEntry.operation_id == op_id).order_by(JournalEntry.id)
        )
        return [(r.phase, r.text) for r in rows]


async def audited_changes(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    """(what, detail) of each change in the audit trail, in order."""
    async with sessions() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.kind == "change").order_by(AuditEntry.id)
        )
        return [(r.text, r.detail) for r in rows]


async def incidents(sessions: async_sessionmaker[AsyncSession]) -> list[Incident]:
    async with sessions() as session:
        return list(await session.scalars(select(Incident).order_by(Incident.id)))


async def timeline(sessions: async_sessionmaker[AsyncSession], incident_id: int) -> list[str]:
    """The incident's timeline as "Kind region" lines, in order."""
    async with sessions() as session:
        rows = await session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id)
            .order_by(TimelineEvent.at, TimelineEvent.id)
        )
        return [f"{r.kind} {r.region}" for r in rows]
