"""Outbound attempts and campaign runs: the campaigns being dialled and their numbers (the
attempts themselves are contact_attempts rows).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dial_campaigns",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_dial_at", TS, nullable=False),
    )
    op.create_table(
        "dial_numbers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("language", sa.String(16)),
        sa.Column("source", sa.String(255)),
        sa.Column("zones", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("result", sa.String(16)),
        sa.Column("reason", sa.Text()),
        sa.Column("channel_id", sa.String(128)),
        sa.Column("claim_token", sa.String(36)),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("lease_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.UniqueConstraint("campaign", "phone", name="uq_dial_numbers_campaign_phone"),
    )
    op.create_index(
        "ix_dial_numbers_due", "dial_numbers", ["campaign", "status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("dial_numbers")
    op.drop_table("dial_campaigns")
