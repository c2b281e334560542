"""replay fingerprints index (issue 13)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replay_captures",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("prints", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_replay_captures_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_replay_captures_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_replay_captures")),
    )
    op.create_index("ix_replay_captures_created_at", "replay_captures", ["created_at"])
    op.create_table(
        "replay_bands",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("band", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_replay_bands_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_replay_bands_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "band", name=op.f("pk_replay_bands")),
    )
    op.create_index("ix_replay_bands_band_created_at", "replay_bands", ["band", "created_at"])
    op.create_index(
        "ix_replay_bands_key_band_created_at", "replay_bands", ["api_key_id", "band", "created_at"]
    )
    op.create_index("ix_replay_bands_created_at", "replay_bands", ["created_at"])
    # The old whole-crop hashes cannot be compared with the new aligned ones.
    op.execute("DELETE FROM fingerprints WHERE kind = 'phash'")


def downgrade() -> None:
    op.drop_index("ix_replay_bands_created_at", table_name="replay_bands")
    op.drop_index("ix_replay_bands_key_band_created_at", table_name="replay_bands")
    op.drop_index("ix_replay_bands_band_created_at", table_name="replay_bands")
    op.drop_table("replay_bands")
    op.drop_index("ix_replay_captures_created_at", table_name="replay_captures")
    op.drop_table("replay_captures")
