"""Rolling updates: where each model's rollout stands, so that `corral models rollout --resume` continues.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("keep_alive", sa.String(32)),
        sa.Column("node_index", sa.Integer, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollouts")
