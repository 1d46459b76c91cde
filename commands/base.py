"""What every subcommand module gets and gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.access import Access
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.invocation import Invocation as Invocation
from bot.operations.workflow import Operations
from bot.ports import LoadBalancer
from bot.status import StatusService
from bot.views.reply import Reply


@dataclass(frozen=True)
class Services:
    """The services commands call; built once at start and shared by every request."""

    fleet: Fleet
    status: StatusService
    loadbalancer: LoadBalancer | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    incidents: Incidents | None = None
    access: Access | None = None
    operations: Operations | None = None  # drains and drills
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def db(self) -> async_sessionmaker[AsyncSession]:
        assert self.sessions is not None, "this command needs the database"
        return self.sessions


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, usage line and summary (help is generated from these), and run."""

    name: str
    usage: str
    summary: str
    run: Callable[[list[str], Context], Awaitable[Reply]]


@dataclass(frozen=True)
class Context:
    invocation: Invocation
    services: Services
    commands: Sequence[Command]
