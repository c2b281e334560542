"""capture sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 05:01:04.970155
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "capture_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("challenge", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("upload_token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_used_at", sa.DateTime(), nullable=True),
        sa.Column("token_job_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_capture_sessions_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_capture_sessions_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["token_job_id"],
            ["jobs.id"],
            name=op.f("fk_capture_sessions_token_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_sessions")),
    )
    with op.batch_alter_table("capture_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_capture_sessions_expires_at", ["expires_at"], unique=False)
        batch_op.create_index("ix_capture_sessions_nonce", ["nonce"], unique=True)
        batch_op.create_index(
            "ix_capture_sessions_upload_token_hash", ["upload_token_hash"], unique=True
        )

    # Existing keys do not require sessions; the server default only fills their rows.
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("require_session", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("require_session", server_default=None)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_check", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("session_check")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("require_session")

    with op.batch_alter_table("capture_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_capture_sessions_upload_token_hash")
        batch_op.drop_index("ix_capture_sessions_nonce")
        batch_op.drop_index("ix_capture_sessions_expires_at")

    op.drop_table("capture_sessions")
