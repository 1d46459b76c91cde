"""What every subcommand module gets and gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.fleet import Fleet
from bot.invocation import Invocation as Invocation
from bot.loadbalancer.port import LoadBalancer
from bot.status import StatusService
from bot.views.reply import Reply


@dataclass(frozen=True)
class Services:
    """The services commands call; built once at start and shared by every request."""

    fleet: Fleet
    status: StatusService
    loadbalancer: LoadBalancer | None = None


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
