"""The audit trail in the database: every command and action, with its outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry
from bot.invocation import Invocation

AUDIT_TEXT = 4000  # as much of a command's text as /failover accepts (commands/parsing.py)


class SqlAuditTrail:
    """Rows written by group commit: whoever finds no write in progress writes every row
    waiting, in one transaction, and each caller returns once its own row is committed.

    200 status commands at once were 200 transactions, which SQLite serialises (and refused
    with "database is locked" past its busy timeout); now they are a few."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing = asyncio.Lock()

    async def record_command(
        self,
        invocation: Invocation,
        outcome: str,
        detail: str,
        error_id: str | None,
        seconds: float,
    ) -> None:
        row = {
            "at": invocation.received_at,
            "kind": invocation.kind,
            "user_id": invocation.user_id,
            "user_name": invocation.user_name,
            "team_id": invocation.team_id,
            "channel_id": invocation.channel_id,
            # A refused over-long command is kept as its first 4,000 characters and its length.
            "text": invocation.text
            if len(invocation.text) <= AUDIT_TEXT
            else f"{invocation.text[:AUDIT_TEXT]}… ({len(invocation.text):,} characters)",
            "outcome": outcome,
            "detail": detail,
            "error_id": error_id,
            "seconds": seconds,
        }
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, done))
        async with self._writing:
            if not done.done():  # an earlier writer may have taken our row with its own
                await self._write_waiting(done)
        await done  # raises the write's error for every row it held

    async def _write_waiting(self, own: asyncio.Future[None]) -> None:
        batch, self._waiting = self._waiting, []
        try:
            async with self.sessions.begin() as session:
                await session.execute(insert(AuditEntry), [row for row, _ in batch])
        except Exception as exc:
            for _, done in batch:
                done.set_exception(exc)
        except BaseException:
            # the writer was cancelled: the other rows' callers hear of it and go on
            own.cancel()
            for _, done in batch:
                if not done.done():
                    done.set_exception(RuntimeError("the audit write was interrupted"))
            raise
        else:
            for _, done in batch:
                done.set_result(None)

    async def recent(self, limit: int = 50) -> list[AuditEntry]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            )
            return list(rows)
