"""Fleet state: run-time node overrides shared by replicas, and the version counter they poll.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_nodes",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("settings", sa.JSON),
        sa.Column("removed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("draining", sa.Boolean),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128)),
    )
    version = op.create_table(
        "fleet_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("fleet_version")
    op.drop_table("fleet_nodes")
