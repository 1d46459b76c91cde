"""Silences announced in the channel: who ended a silence, and the silence an outbox post announces.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Who ended a silence with `unsilence`; NULL with an end time: it expired.
    with op.batch_alter_table("silences") as batch:
        batch.add_column(sa.Column("ended_by", sa.String(64), nullable=True))
    # An outbox post announcing a silence or its end (no incident: it goes to the channel).
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("silence_id", sa.Integer(), nullable=True))
    # Silences whose time ran out before this revision ended then, unannounced: mark them so
    # the leader does not announce old expiries (a silence lasts at most 24 h).
    silences = sa.table(
        "silences",
        sa.column("until", sa.DateTime(timezone=True)),
        sa.column("ended_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        silences.update()
        .where(silences.c.ended_at.is_(None), silences.c.until <= datetime.now(UTC))
        .values(ended_at=silences.c.until)
    )


def downgrade() -> None:
    # Announcements not sent yet cannot be told apart from incident posts any more: drop them.
    op.execute("DELETE FROM outbox WHERE silence_id IS NOT NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("silence_id")
    with op.batch_alter_table("silences") as batch:
        batch.drop_column("ended_by")
