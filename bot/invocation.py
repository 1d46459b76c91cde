"""Who asked for what, where: the domain's view of a slash command or a button click."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Invocation:
    user_id: str
    text: str
    channel_id: str = ""
    team_id: str = ""
    user_name: str = ""
    kind: str = "command"  # command or action (a button)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
