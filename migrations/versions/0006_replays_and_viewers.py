"""Slack requests already accepted (replays answered without acting), and one row per App Home
viewer in place of the JSON list in stored_state "home_viewers".

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
VIEWERS = "home_viewers"  # the stored_state row that held them, and the new table's name

stored_state = sa.table(
    "stored_state",
    sa.column("name", sa.String()),
    sa.column("value", sa.JSON()),
    sa.column("updated_at", UTC_TIME),
)
home_viewers = sa.table(
    "home_viewers", sa.column("user_id", sa.String()), sa.column("first_opened_at", UTC_TIME)
)


def upgrade() -> None:
    op.create_table(
        "slack_requests",
        sa.Column("request_ts", sa.String(20), primary_key=True),
        sa.Column("signature", sa.String(100), primary_key=True),
        sa.Column("request_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_slack_requests_request_at", "slack_requests", ["request_at"])
    op.create_table(
        "home_viewers",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("first_opened_at", UTC_TIME, nullable=False),
    )
    # The viewers kept so far, one row each; the list's own time stands for when they opened.
    bind = op.get_bind()
    row = bind.execute(
        sa.select(stored_state.c.value, stored_state.c.updated_at).where(
            stored_state.c.name == VIEWERS
        )
    ).first()
    if row is not None:
        users = sorted({str(u) for u in (row.value or {}).get("users", []) if u})
        at = row.updated_at or datetime.now(UTC)
        if users:
            op.bulk_insert(home_viewers, [{"user_id": u, "first_opened_at": at} for u in users])
        bind.execute(sa.delete(stored_state).where(stored_state.c.name == VIEWERS))


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(home_viewers.c.user_id, home_viewers.c.first_opened_at)).all()
    if rows:
        latest = max(r.first_opened_at for r in rows)
        op.bulk_insert(
            stored_state,
            [
                {
                    "name": VIEWERS,
                    "value": {"users": sorted(r.user_id for r in rows)},
                    "updated_at": latest,
                }
            ],
        )
    op.drop_table("home_viewers")
    op.drop_index("ix_slack_requests_request_at", table_name="slack_requests")
    op.drop_table("slack_requests")
