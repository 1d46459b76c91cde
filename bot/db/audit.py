"""The audit trail in the database: every command and action, with its outcome."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry
from bot.invocation import Invocation


class SqlAuditTrail:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record_command(
        self,
        invocation: Invocation,
        outcome: str,
        detail: str,
        error_id: str | None,
        seconds: float,
    ) -> None:
        async with self.sessions.begin() as session:
            session.add(
                AuditEntry(
                    at=invocation.received_at,
                    kind=invocation.kind,
                    user_id=invocation.user_id,
                    user_name=invocation.user_name,
                    team_id=invocation.team_id,
                    channel_id=invocation.channel_id,
                    text=invocation.text,
                    outcome=outcome,
                    detail=detail,
                    error_id=error_id,
                    seconds=seconds,
                )
            )

    async def recent(self, limit: int = 50) -> list[AuditEntry]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            )
            return list(rows)
