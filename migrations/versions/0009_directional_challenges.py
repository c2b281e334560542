"""directional challenges (issue 14)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The challenge steps a job failed, shown by GET /v1/jobs/<id> as failed_steps; older
    # results keep NULL (read as no failed step).
    with op.batch_alter_table("job_results") as batch:
        batch.add_column(sa.Column("failed_steps", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_results") as batch:
        batch.drop_column("failed_steps")
