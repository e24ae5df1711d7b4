"""API keys: a node-group selector.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null: the key may use every node. batch_alter_table keeps SQLite (no ALTER ... DROP) symmetric.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("nodes", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("nodes")
