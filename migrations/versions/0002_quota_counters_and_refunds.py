"""quota counters and refunds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 02:13:11.113363
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_counters",
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=20), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_quota_counters_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("api_key_id", "period", name=op.f("pk_quota_counters")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("charged_period", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("refunded_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("refunded_at")
        batch_op.drop_column("charged_period")

    op.drop_table("quota_counters")
