"""retention indexes (issue 16)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 23:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): the purge selects by these in batches, and deleting a job looks up the
# capture sessions and fingerprints that name it (PostgreSQL's ON DELETE actions would scan
# those tables otherwise).
INDEXES = (
    ("jobs", "finished_at"),
    ("job_inputs", "created_at"),
    ("quota_counters", "period"),
    ("capture_sessions", "job_id"),
    ("capture_sessions", "token_job_id"),
    ("fingerprints", "job_id"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
