"""Which service instance (ARI app and Asterisk) took a call: after a crash, each instance
closes only its own calls left open.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as t:
        t.add_column(sa.Column("node", sa.String(128)))
        t.create_index("ix_calls_node", ["node"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as t:
        t.drop_index("ix_calls_node")
        t.drop_column("node")
