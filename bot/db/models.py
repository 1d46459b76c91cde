"""The tables. Their shape changes only through an Alembic revision in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: the bot stores UTC times only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class AuditEntry(Base):
    """Every command received and every change made: who, where, what, when, the outcome."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))  # command, action, change
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(128), default="")
    team_id: Mapped[str] = mapped_column(String(64), default="")
    channel_id: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))  # ok, rejected, error
    detail: Mapped[str] = mapped_column(Text, default="")
    error_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


class Lease(Base):
    """Who leads: the holder probes, reads Cloudflare and posts, until ``expires_at`` passes."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StoredState(Base):
    """Small named JSON documents a new leader needs: the monitor's state, cursors."""

    __tablename__ = "stored_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    began_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the first sign of trouble
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    regions: Mapped[list[str]] = mapped_column(JSON)
    title: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    time_to_detect: Mapped[float | None] = mapped_column(Float, nullable=True)
    rto: Mapped[float | None] = mapped_column(Float, nullable=True)
    time_to_recover: Mapped[float | None] = mapped_column(Float, nullable=True)
    # PagerDuty: the dedup key once paged; who acknowledged the page, when, and from where
    # (slack: the Ack button; pagerduty: learnt from its webhook).
    page_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acknowledged_via: Mapped[str | None] = mapped_column(String(16), nullable=True)


class TimelineEvent(Base):
    __tablename__ = "timeline_events"
    __table_args__ = (Index("ix_timeline_events_incident", "incident_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # bot, cloudflare, operator, slack
    author: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Who ended it with `unsilence`; None with an end time: it expired (or a new one replaced it).
    ended_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OutboxPost(Base):
    """A post owed to the channel; sent in order by the leader, so a crash repeats at most one."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), nullable=True
    )
    # open, update, reply, reminder, close; silence, unsilence, expiry (no incident)
    kind: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the timeline event
    # A silence's start or end announced in the channel (kind silence, unsilence or expiry).
    silence_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str | None] = mapped_column(String(64), nullable=True)  # ts, or why skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Operation(Base):
    """A drain or a drill: its phase is committed before the external call it stands for."""

    __tablename__ = "operations"
    __table_args__ = (Index("ix_operations_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # drain, drill
    region: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    break_glass: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    restored_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    channel: Mapped[str] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # saved config, figures


class JournalEntry(Base):
    __tablename__ = "operation_journal"
    __table_args__ = (Index("ix_operation_journal_op", "operation_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    phase: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    posted: Mapped[bool] = mapped_column(default=False)  # said in the operation's thread


class SlackRequest(Base):
    """A signed Slack request already accepted: its (timestamp, signature) pair is inserted once,
    so a second insert is a replay, on every instance alike. Kept while Slack's timestamp could
    still pass the signature check (five minutes), then pruned."""

    __tablename__ = "slack_requests"
    __table_args__ = (Index("ix_slack_requests_request_at", "request_at"),)

    # The headers X-Slack-Request-Timestamp and X-Slack-Signature, as Slack sent them.
    request_ts: Mapped[str] = mapped_column(String(20), primary_key=True)
    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the timestamp, for pruning


class HomeViewer(Base):
    """Who has opened the App Home: one row each, inserted or ignored (the lease holder
    re-publishes the dashboard to them)."""

    __tablename__ = "home_viewers"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_opened_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CloudflareNotification(Base):
    """A notification Cloudflare delivered to the webhook, as received by any instance; the lease
    holder applies it to the watch (``handled_at``) and says what it made of it (``result``)."""

    __tablename__ = "cloudflare_notifications"
    __table_args__ = (Index("ix_cloudflare_notifications_pending", "handled_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    notified_at: Mapped[datetime] = mapped_column(UTCDateTime())  # Cloudflare's own ``ts``
    alert_type: Mapped[str] = mapped_column(String(64))
    alert_event: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the pool's name
    origin: Mapped[str | None] = mapped_column(String(255), nullable=True)  # for origin alerts
    healthy: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # the new health
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Page(Base):
    """An event owed to PagerDuty's Events API: sent in order by the leader, retried with
    backoff (``next_attempt_at``) while PagerDuty is unreachable, so a crash repeats at most one."""

    __tablename__ = "pages"
    __table_args__ = (Index("ix_pages_pending", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # trigger, acknowledge, resolve
    severity: Mapped[str] = mapped_column(String(16))  # critical, error, warning, info
    summary: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)  # picks a routing key
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
