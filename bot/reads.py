"""What views read: incidents, their timeline entries and figures, operations, the dashboard.

Plain data, no I/O: services build these from the database, views turn them into messages, so a
view never needs a database session or an HTTP client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: a relay reads PublicCheck without the bot's logic
    from bot.monitor import PoolState
    from bot.safety import BlastRow


@dataclass(frozen=True)
class Figures:
    time_to_detect: float | None
    rto: float | None
    time_to_recover: float | None


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
    silenced_until: Mapping[str, datetime] = field(default_factory=dict)  # region -> until
    # PagerDuty: paged at all, and who acknowledged the page, when, where (slack, pagerduty).
    paged: bool = False
    # The incident's first trigger in the page outbox: None queued, "retrying: ...", "accepted",
    # "failed: ..." or "skipped: ..." (what the page sender wrote in pages.result).
    page_result: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_via: str | None = None


@dataclass(frozen=True)
class OperationView:
    """A drain or drill as people see it."""

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
    created_at: datetime | None = None
    at: datetime | None = None  # a scheduled drill's start
    rto: Mapping[str, float | None] | None = None  # a drill's figures, by vantage point
    rejoin: Mapping[str, float | None] | None = None


@dataclass(frozen=True)
class JournalLine:
    at: datetime
    text: str


@dataclass(frozen=True)
class DrillRecord:
    drill: OperationView
    journal: Sequence[JournalLine]
    earlier: Sequence[OperationView]  # the region's earlier drills, newest first


@dataclass(frozen=True)
class BoardOperation:
    """A drain or drill on the dashboard; the view turns ``requested_by`` into a mention."""

    text: str  # "drain of eu-west: active"
    requested_by: str


@dataclass(frozen=True)
class Dashboard:
    regions: dict[str, str]  # region -> state
    cloudflare: dict[str, str]  # region -> Cloudflare's health
    moved: dict[str, str]  # geo -> region serving it instead of its own
    stranded: dict[str, str] = field(default_factory=dict)  # geo -> what its users get instead
    incidents: list[str] = field(default_factory=list)
    operations: list[BoardOperation] = field(default_factory=list)
    next_game_day: str | None = None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PublicCheck:
    where: str  # "the bot's location", "relay WEU"
    geo: str | None
    status: int | None = None
    latency: float | None = None  # seconds
    region: str | None = None  # the region that served it, by the rule
    said: str | None = None  # what the answer said, when the rule could not map it
    error: str | None = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PublicCheck:
        fields = {k: data.get(k) for k in cls.__dataclass_fields__ if k != "where"}
        return cls(where=where, **fields)


@dataclass(frozen=True)
class SilenceView:
    region: str
    until: datetime
    reason: str
    created_by: str


@dataclass(frozen=True)
class SilenceNotice:
    """A silence beginning or ending, as the channel is told of it."""

    kind: str  # "silence", "unsilence" (ended by someone) or "expiry"
    region: str
    until: datetime  # when it ends (or was to end, for an unsilence)
    reason: str
    created_by: str
    at: datetime  # when it began or ended
    now: datetime  # when the channel is told (a late expiry still dates itself right)
    ended_by: str | None = None  # who unsilenced it
