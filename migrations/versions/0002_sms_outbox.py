"""SMS outbox: confirmation jobs and their delivery reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sms_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "record_id", sa.String(36), sa.ForeignKey("consent_records.record_id"), nullable=False
        ),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(8), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("in_doubt", sa.Boolean(), nullable=False),
        sa.Column("attempt_started_at", TS),
        sa.Column("lease_until", TS),
        sa.Column("claim_token", sa.String(36)),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("gateway", sa.String(16)),
        sa.Column("message_id", sa.String(64)),
        sa.Column("sent_at", TS),
        sa.Column("delivered_at", TS),
        sa.Column("failed_at", TS),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint("record_id", "decision", "decided_at", name="uq_sms_jobs_decision"),
    )
    op.create_index("ix_sms_jobs_record_id", "sms_jobs", ["record_id"])
    op.create_index("ix_sms_jobs_message_id", "sms_jobs", ["message_id"])
    op.create_index("ix_sms_jobs_due", "sms_jobs", ["status", "next_attempt_at"])
    op.create_table(
        "sms_delivery_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("sms_jobs.id"), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("gateway_status", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_sms_delivery_reports_job_id", "sms_delivery_reports", ["job_id"])


def downgrade() -> None:
    op.drop_table("sms_delivery_reports")
    op.drop_table("sms_jobs")
