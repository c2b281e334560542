"""upload-token idempotency, poison captures (issue 16)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Refunds for INTERNAL_ERROR per key and UTC day, capped by ANTIHACK_POISON_REFUND_LIMIT.
    op.create_table(
        "refund_counters",
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("refunded", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_refund_counters_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("api_key_id", "day", name=op.f("pk_refund_counters")),
    )


def downgrade() -> None:
    op.drop_table("refund_counters")
