"""A confirmed drill waiting for its driver is "starting", no longer "applying" (a drain's word).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE operations SET state = 'starting' WHERE kind = 'drill' AND state = 'applying'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE operations SET state = 'applying' WHERE kind = 'drill' AND state = 'starting'"
    )
