"""What every subcommand module gets and gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.access import Access
from bot.fleet import Fleet
from bot.invocation import Invocation as Invocation
from bot.operations.workflow import Operations
from bot.ports import LoadBalancer
from bot.records import IncidentRecords
from bot.silences import Silences
from bot.status import StatusService
from bot.views.reply import Reply


@dataclass(frozen=True)
class Services:
    """The services commands call; built once at start and shared by every request."""

    fleet: Fleet
    status: StatusService
    loadbalancer: LoadBalancer | None = None
    records: IncidentRecords | None = None  # incidents, for reading and notes
    silences: Silences | None = None
    access: Access | None = None
    operations: Operations | None = None  # drains and drills
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


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
