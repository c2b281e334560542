"""uploaded payloads stored without a compression attempt (issue 18)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns holding JPEG frames (a capture's protobuf, an H5 image): incompressible data.
PAYLOADS = (("job_inputs", "payload"), ("images", "payload"))


def upgrade() -> None:
    # PostgreSQL tries pglz on every value over ~2 KB before storing it out of line. A capture's
    # header compresses, so pglz does not give up early and runs over all ~150 KB of JPEG data
    # only to store it raw: measured at ~4 ms of server CPU per submission, 29% of the whole
    # machine's CPU under bench_intake. EXTERNAL stores out of line without trying; values already
    # stored are read as before (a catalog change: no table rewrite). SQLite has no storage modes.
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in PAYLOADS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in PAYLOADS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED")
