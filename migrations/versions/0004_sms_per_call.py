"""SMS jobs that sum up a call: the records a job is about, and the call that holds it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sms_jobs") as t:
        t.add_column(sa.Column("record_ids", sa.JSON(), nullable=True))
        t.add_column(sa.Column("call_id", sa.String(36)))
    jobs = sa.table(
        "sms_jobs", sa.column("id"), sa.column("record_id"), sa.column("record_ids", sa.JSON())
    )
    conn = op.get_bind()
    for job_id, record_id in conn.execute(sa.select(jobs.c.id, jobs.c.record_id)).all():
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(record_ids=[record_id]))
    with op.batch_alter_table("sms_jobs") as t:
        t.alter_column("record_ids", existing_type=sa.JSON(), nullable=False)
        t.create_index("ix_sms_jobs_call_id", ["call_id"])


def downgrade() -> None:
    with op.batch_alter_table("sms_jobs") as t:
        t.drop_index("ix_sms_jobs_call_id")
        t.drop_column("call_id")
        t.drop_column("record_ids")
