"""Cloudflare's notifications as received (the lease holder applies them), PagerDuty's outbox of
pages, and an incident's page: its dedup key and who acknowledged it, from where.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cloudflare_notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("notified_at", UTC_TIME, nullable=False),
        sa.Column("alert_type", sa.String(64), nullable=False),
        sa.Column("alert_event", sa.String(64), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("policy_id", sa.String(64), nullable=True),
        sa.Column("pool", sa.String(128), nullable=True),
        sa.Column("origin", sa.String(255), nullable=True),
        sa.Column("healthy", sa.Boolean(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("handled_at", UTC_TIME, nullable=True),
        sa.Column("result", sa.String(128), nullable=True),
    )
    op.create_index(
        "ix_cloudflare_notifications_pending", "cloudflare_notifications", ["handled_at", "id"]
    )
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("result", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_pages_pending", "pages", ["sent_at", "id"])
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("page_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("acknowledged_at", UTC_TIME, nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("acknowledged_via", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("acknowledged_via")
        batch.drop_column("acknowledged_by")
        batch.drop_column("acknowledged_at")
        batch.drop_column("page_key")
    op.drop_index("ix_pages_pending", table_name="pages")
    op.drop_table("pages")
    op.drop_index("ix_cloudflare_notifications_pending", table_name="cloudflare_notifications")
    op.drop_table("cloudflare_notifications")
