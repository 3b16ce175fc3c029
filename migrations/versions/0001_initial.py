"""Calls, consent records and the hash-chained consent event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(36), primary_key=True),
        sa.Column("channel_id", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("caller_number", sa.String(64)),
        sa.Column("called_number", sa.String(64)),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("recording_path", sa.Text()),
        sa.Column("recording_sha256", sa.String(64)),
        sa.Column("recording_duration_s", sa.Float()),
        sa.Column("recording_format", sa.String(16)),
    )
    op.create_index("ix_calls_channel_id", "calls", ["channel_id"])
    op.create_table(
        "consent_records",
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("schema_version", sa.String(8), nullable=False),
        sa.Column("call_id", sa.String(36), sa.ForeignKey("calls.call_id"), nullable=False),
        sa.Column("pii_principal_id", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("purpose_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.JSON(), nullable=False),
        sa.Column("controller", sa.JSON(), nullable=False),
        sa.Column("collection_method", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("decided_at", TS),
        sa.Column("head_seq", sa.Integer()),
        sa.Column("head_hash", sa.String(64)),
    )
    op.create_index("ix_consent_records_call_id", "consent_records", ["call_id"])
    op.create_index("ix_consent_records_pii_principal_id", "consent_records", ["pii_principal_id"])
    op.create_index("ix_consent_records_purpose_id", "consent_records", ["purpose_id"])
    op.create_index(
        "ix_consent_records_phone_purpose", "consent_records", ["pii_principal_id", "purpose_id"]
    )
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "record_id", sa.String(36), sa.ForeignKey("consent_records.record_id"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("step", sa.String(32)),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("record_id", "seq", name="uq_consent_events_record_seq"),
    )


def downgrade() -> None:
    op.drop_table("consent_events")
    op.drop_table("consent_records")
    op.drop_table("calls")
