"""What an operation keeps beside its columns: a typed model over the JSON ``detail`` column."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.safety import BlastRow


class Saved(BaseModel):
    """The configuration a drill changed, to put back."""

    pool_id: str
    enabled: bool = True


class Stop(BaseModel):
    """Why a drill stopped early, kept so that a recovery after a restart says the real cause."""

    outcome: str
    why: str


class OperationDetail(BaseModel):
    # Rows written by older versions may carry keys this model no longer has: ignore them.
    model_config = ConfigDict(extra="ignore")

    length: float | None = None  # a drain's length in seconds, from the command
    needs_approval: bool = False
    blast: list[list[Any]] = Field(default_factory=list)  # BlastRow.stored() rows
    outside: bool = False  # a restore of a pool disabled outside the bot
    last_error_at: datetime | None = None  # the last error said in the thread
    # A drill's.
    at: datetime | None = None  # scheduled start (UTC)
    noticed: bool = False  # the notice before a scheduled drill was posted
    saved: Saved | None = None
    geos: list[str] = Field(default_factory=list)  # the geo regions the drilled pool served
    stopped: Stop | None = None
    recovering: bool = False
    cancel_requested: str | None = None  # who asked
    rto: dict[str, float | None] | None = None  # seconds by vantage point
    rejoin: dict[str, float | None] | None = None

    @field_validator("stopped", mode="before")
    @classmethod
    def _old_stop(cls, value: Any) -> Any:
        # Older versions stored the cause as [outcome, why].
        if isinstance(value, list) and len(value) == 2:
            return {"outcome": value[0], "why": value[1]}
        return value

    @property
    def blast_rows(self) -> list[BlastRow]:
        return [BlastRow.from_stored(row) for row in self.blast]


class HasDetail(Protocol):
    detail: dict[str, Any]


def detail_of(op: HasDetail) -> OperationDetail:
    return OperationDetail.model_validate(op.detail or {})


def update_detail(op: HasDetail, **changes: Any) -> OperationDetail:
    """Write ``changes`` into ``op``'s detail (validated) and return the whole of it."""
    merged = detail_of(op).model_copy(update=changes)
    detail = OperationDetail.model_validate(merged.model_dump())
    op.detail = detail.model_dump(mode="json", exclude_defaults=True)
    return detail
