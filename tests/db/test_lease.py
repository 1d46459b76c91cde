"""The leader lease on SQLite and PostgreSQL: one holder, renewed, taken over once expired."""

from __future__ import annotations

import asyncio

from bot.db.engine import create_engine, sessionmaker
from bot.db.lease import LeaderLease


async def test_one_holder_then_takeover_after_expiry(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    a, b = LeaderLease(sessions, "a", ttl=1.5), LeaderLease(sessions, "b", ttl=1.5)
    try:
        assert await a.acquire()
        assert not await b.acquire()
        assert await a.acquire()  # renewing
        assert await a.holder_now() == "a"
        await asyncio.sleep(2.6)  # a died: it stopped renewing
        assert await b.acquire()
        assert not await a.acquire()
        assert await b.holder_now() == "b"
        await b.release()  # a clean stop gives it up at once
        assert await a.acquire()
    finally:
        await engine.dispose()


async def test_racing_instances_get_one_leader(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    try:
        leases = [LeaderLease(sessions, f"i{n}", ttl=10) for n in range(3)]
        won = await asyncio.gather(*(lease.acquire() for lease in leases), return_exceptions=True)
        assert [w for w in won if w is True] == [True], won
    finally:
        await engine.dispose()
