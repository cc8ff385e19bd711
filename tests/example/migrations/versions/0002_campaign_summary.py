"""campaigns.summary: rows written before it have NULL there

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("summary", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:  # SQLite rebuilds the table
        batch.drop_column("summary")
