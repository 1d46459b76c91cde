"""What a probe saw: the evidence every health state and event is built on (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    HEALTHY = "healthy"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    CONNECTION_ERROR = "connection error"
    HTTP_STATUS = "unexpected status"
    BODY_MISMATCH = "body mismatch"
    BAD_JSON = "bad JSON"
    NO_ANSWER = "no answer yet"  # the bot stopped waiting: not the origin's verdict


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one origin: healthy or not, why, and how long it took."""

    region: str
    origin: str
    url: str
    outcome: Outcome
    reason: str
    at: datetime
    latency: float | None = None  # seconds, of the attempt that decided the result
    status_code: int | None = None
    failing_checks: dict[str, str] = field(default_factory=dict)
    attempts: int = 1

    @property
    def healthy(self) -> bool:
        return self.outcome is Outcome.HEALTHY

    @property
    def answered(self) -> bool:
        """False when the bot gave up waiting; such a result says nothing about the origin."""
        return self.outcome is not Outcome.NO_ANSWER
