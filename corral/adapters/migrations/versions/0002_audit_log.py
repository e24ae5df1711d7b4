"""Audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("key_name", sa.String(128)),
        sa.Column("key_prefix", sa.String(16)),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("method", sa.String(16)),
        sa.Column("route", sa.String(256)),
        sa.Column("model", sa.String(256)),
        sa.Column("node", sa.String(128)),
        sa.Column("status", sa.Integer),
        sa.Column("prompt_sha256", sa.String(64)),
        sa.Column("prompt_len", sa.Integer),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("ttft_s", sa.Float),
        sa.Column("latency_s", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("action", sa.String(64)),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_key_name", "audit_log", ["key_name"])


def downgrade() -> None:
    op.drop_table("audit_log")
