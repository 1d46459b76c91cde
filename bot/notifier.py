"""The Notifier port: how services hand incidents to the channel, as domain objects (no render)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.incidents import Figures
from bot.monitor import PoolState
from bot.safety import BlastRow


@dataclass(frozen=True)
class EntryView:
    id: int
    at: datetime
    kind: str
    region: str | None
    severity: str
    text: str
    source: str
    author: str | None = None


@dataclass(frozen=True)
class IncidentView:
    id: int
    title: str
    severity: str
    opened_at: datetime
    began_at: datetime
    closed_at: datetime | None
    regions: Sequence[str]
    entries: Sequence[EntryView]
    figures: Figures
    rto_target: float
    rejoin_target: float
    now: datetime
    states: Mapping[str, PoolState] = field(default_factory=dict)
    failed_over: Mapping[str, str] = field(default_factory=dict)  # geo -> region serving it
    stranded: Mapping[str, str] = field(default_factory=dict)  # geo -> what its users get
    silenced: Sequence[str] = ()


class Notifier(Protocol):
    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        """Post the incident's message; returns its ts."""
        ...

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None: ...

    async def post_thread(
        self,
        channel: str,
        thread_ts: str,
        incident: IncidentView,
        entries: Sequence[EntryView],
        *,
        reminder: bool = False,
    ) -> str: ...


@dataclass(frozen=True)
class OperationView:
    """A drain or drill as the channel shows it."""

    id: int
    kind: str
    region: str
    origin: str | None
    state: str
    requested_by: str
    approved_by: str | None
    reason: str
    break_glass: Sequence[str]
    applied_at: datetime | None
    expires_at: datetime | None
    blast: Sequence[BlastRow] = ()
    lines: Sequence[str] = ()  # what has happened, newest last


class OperationNotifier(Protocol):
    async def post_operation(self, channel: str, op: OperationView) -> str: ...

    async def update_operation(self, channel: str, ts: str, op: OperationView) -> None: ...

    async def post_operation_note(self, channel: str, thread_ts: str, text: str) -> str: ...
