"""SMS in the consent lifecycle: job kinds (confirmation, reply, marketing) with a purpose and
no record for the last two, the number's index for "the last SMS sent to it", every inbound
SMS, and `logged` for what the log gateway only wrote down.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sms_jobs") as t:
        t.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="confirmation")
        )
        t.add_column(sa.Column("purpose_id", sa.String(64)))
        t.alter_column("record_id", existing_type=sa.String(36), nullable=True)
        t.create_index("ix_sms_jobs_phone", ["phone"])
    with op.batch_alter_table("sms_jobs") as t:
        t.alter_column("kind", existing_type=sa.String(16), server_default=None)
    # The log gateway never delivered anything: say what it did.
    op.execute(
        "UPDATE sms_jobs SET status = 'logged', delivered_at = NULL "
        "WHERE gateway = 'log' AND status = 'delivered'"
    )
    op.create_table(
        "sms_inbound",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("gateway", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("record_ids", sa.JSON(), nullable=False),
        sa.Column("reply_job_id", sa.String(36), sa.ForeignKey("sms_jobs.id")),
        sa.UniqueConstraint("gateway", "message_id", name="uq_sms_inbound_message"),
    )
    op.create_index("ix_sms_inbound_sender", "sms_inbound", ["sender"])


def downgrade() -> None:
    op.drop_table("sms_inbound")
    op.execute(
        "DELETE FROM sms_delivery_reports WHERE job_id IN "
        "(SELECT id FROM sms_jobs WHERE record_id IS NULL)"
    )
    op.execute("DELETE FROM sms_jobs WHERE record_id IS NULL")
    op.execute("UPDATE sms_jobs SET status = 'delivered' WHERE status = 'logged'")
    op.execute("UPDATE sms_jobs SET status = 'failed' WHERE status = 'suppressed'")
    with op.batch_alter_table("sms_jobs") as t:
        t.drop_index("ix_sms_jobs_phone")
        t.alter_column("record_id", existing_type=sa.String(36), nullable=False)
        t.drop_column("purpose_id")
        t.drop_column("kind")
