"""A rig for drains and drills: the fleet, a migrated database, the fake load balancer, the list
clock, the channel, and the workflow people use (propose, confirm, approve, cancel, restore)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet
from bot.operations.workflow import Operations
from bot.safety import Proposal

from ..fakes import FakeLoadBalancer, ListClock, RecordingNotifier

CHANNEL = "C0OPS"


@dataclass
class Rig:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    lb: FakeLoadBalancer
    channel: RecordingNotifier
    ops: Operations

    async def confirmed(
        self,
        kind: str,
        region: str,
        origin: str | None = None,
        length: float | None = None,
        user: str = "U0OPERATOR",
        reason: str = "maintenance",
    ) -> int:
        """An operation proposed and confirmed by its requester, as the buttons do it."""
        proposed = await self.ops.propose(
            Proposal(kind, region, origin), reason, user, length=length
        )
        assert proposed.operation is not None, proposed.assessment.refusals
        await self.ops.confirm(proposed.operation.id, user)
        return proposed.operation.id


@pytest.fixture
async def sessions(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def rig(fleet: Fleet, sessions: async_sessionmaker[AsyncSession]) -> Rig:
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    ops = Operations(fleet, sessions, lb, clock, CHANNEL)
    return Rig(fleet, sessions, clock, lb, RecordingNotifier(clock), ops)
