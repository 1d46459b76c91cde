"""The watch: lease, stored state, incidents and their timelines, silences, the outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "stored_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("opened_at", UTC_TIME, nullable=False),
        sa.Column("began_at", UTC_TIME, nullable=False),
        sa.Column("closed_at", UTC_TIME, nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("message_ts", sa.String(32), nullable=True),
        sa.Column("last_reminder_at", UTC_TIME, nullable=True),
        sa.Column("time_to_detect", sa.Float(), nullable=True),
        sa.Column("rto", sa.Float(), nullable=True),
        sa.Column("time_to_recover", sa.Float(), nullable=True),
    )
    op.create_table(
        "timeline_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=True),
    )
    op.create_index("ix_timeline_events_incident", "timeline_events", ["incident_id", "at"])
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("until", UTC_TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME, nullable=True),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("result", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_outbox_pending", "outbox", ["sent_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("silences")
    op.drop_index("ix_timeline_events_incident", table_name="timeline_events")
    op.drop_table("timeline_events")
    op.drop_table("incidents")
    op.drop_table("stored_state")
    op.drop_table("leases")
