"""Slack requests already accepted, remembered in the database so that every instance shares them.

Slack signs a request over its timestamp and body, and a signature check only refuses a
timestamp more than five minutes from now: within those five minutes the same signed request
can be sent again, and acted on again ("Verifying requests from Slack",
https://api.slack.com/authentication/verifying-requests-from-slack). Each accepted request's
(X-Slack-Request-Timestamp, X-Slack-Signature) is inserted once under a unique key; an insert
that finds it there is a replay. Rows are kept twice that window (clock skew between instances
and Slack), then pruned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import SlackRequest
from bot.db.upsert import insert_or_ignore

WINDOW = timedelta(minutes=5)  # how far from now a signed timestamp is accepted
KEEP = 2 * WINDOW
PRUNE_EVERY = timedelta(minutes=1)
BATCH = 1000  # keys in one INSERT: far below either database's limit on bound parameters

Key = tuple[str, str]  # (timestamp, signature), as Slack sent them


class SeenRequests:
    """``first_time`` by group commit: whoever finds no write in progress inserts every key
    waiting in one transaction (200 commands at once are a few SQLite transactions, not 200),
    and each caller learns whether its own key was new."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self._waiting: list[tuple[Key, asyncio.Future[bool]]] = []
        self._writing = asyncio.Lock()
        self._pruned_at: datetime | None = None

    async def first_time(self, timestamp: str, signature: str) -> bool:
        """True when this signed request was not accepted before (it is recorded now); False
        for a replay. ``timestamp`` is Slack's, in whole seconds (the signature checked it)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(((timestamp, signature), done))
        while not done.done():
            async with self._writing:
                if not done.done():  # an earlier writer may have taken our key with its own
                    await self._write_waiting(done)
        return await done  # raises the write's error for every key it held

    async def _write_waiting(self, own: asyncio.Future[bool]) -> None:
        batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
        keys = list(dict.fromkeys(key for key, _ in batch))  # the same request twice: one row
        now = self.clock()
        try:
            async with self.sessions.begin() as session:
                rows = [
                    {"request_ts": ts, "signature": sig, "request_at": _at(ts)} for ts, sig in keys
                ]
                inserted = await session.execute(
                    insert_or_ignore(session, SlackRequest)
                    .values(rows)
                    .returning(SlackRequest.request_ts, SlackRequest.signature)
                )
                new: set[Key] = {(ts, sig) for ts, sig in inserted.all()}
                if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                    await session.execute(
                        delete(SlackRequest).where(SlackRequest.request_at < now - KEEP)
                    )
                    self._pruned_at = now
        except Exception as exc:
            for _, done in batch:
                if not done.done():  # a caller cancelled while it waited (its request dropped)
                    done.set_exception(exc)
        except BaseException:
            # the writer was cancelled: the other keys' callers hear of it and go on
            own.cancel()
            for _, done in batch:
                if not done.done():
                    done.set_exception(RuntimeError("the replay check was interrupted"))
            raise
        else:
            for key, done in batch:
                # of two identical requests in one batch, only the first is the first time
                if not done.done():
                    done.set_result(key in new)
                new.discard(key)


def _at(timestamp: str) -> datetime:
    return datetime.fromtimestamp(int(timestamp), UTC)
