"""light challenge sessions (issue 15)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The LIGHT step's colour sequence (shared/light.py); NULL for sessions without one.
    with op.batch_alter_table("capture_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("light", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("capture_sessions", schema=None) as batch_op:
        batch_op.drop_column("light")
