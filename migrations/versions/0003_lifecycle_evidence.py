"""Consent lifecycle and evidence: record kinds, erasable subject data, a cached status, the
ledger across all events, signed checkpoints, the do-not-contact register, and triggers that
make the event log append-only.

Existing events are linked into the ledger in the order they were written; existing records
keep schema_version 1 (their facts were not yet in their first event, `verify` says so).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS = "0" * 64
LIFECYCLE = ("requested", "given", "refused", "withdrawn", "expired")

APPEND_ONLY = ("consent_events", "checkpoints")


def _ledger_hash(seq: int, prev: str, event: str) -> str:
    body = json.dumps(
        {"seq": seq, "prev": prev, "event": event}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite changes a column by copying the table: the events that reference the records
        # would fail the foreign key check while the old table is dropped. The pysqlite driver
        # has not begun a transaction yet at this point (it begins one before the first data
        # change), so the pragma takes effect; the check is back on at the end.
        op.execute("PRAGMA foreign_keys = OFF")
    with op.batch_alter_table("calls") as t:
        t.add_column(sa.Column("erased_at", TS))
    with op.batch_alter_table("consent_records") as t:
        t.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="consent"))
        t.add_column(sa.Column("phone_source", sa.String(16)))
        t.add_column(sa.Column("subject_salt", sa.String(32)))
        t.add_column(sa.Column("status", sa.String(16)))
        t.add_column(sa.Column("status_at", TS))
        t.add_column(sa.Column("erased_at", TS))
        t.alter_column("pii_principal_id", existing_type=sa.String(32), nullable=True)
        t.alter_column("purpose_id", existing_type=sa.String(64), nullable=True)
    with op.batch_alter_table("consent_records") as t:
        t.alter_column("kind", existing_type=sa.String(16), server_default=None)

    with op.batch_alter_table("consent_events") as t:
        t.add_column(sa.Column("ledger_seq", SEQ))
        t.add_column(sa.Column("ledger_prev", sa.String(64)))
        t.add_column(sa.Column("ledger_hash", sa.String(64)))

    conn = op.get_bind()
    events = sa.table(
        "consent_events",
        sa.column("id", sa.Integer),
        sa.column("record_id", sa.String),
        sa.column("kind", sa.String),
        sa.column("at", TS),
        sa.column("hash", sa.String),
        sa.column("ledger_seq", SEQ),
        sa.column("ledger_prev", sa.String),
        sa.column("ledger_hash", sa.String),
    )
    records = sa.table(
        "consent_records",
        sa.column("record_id", sa.String),
        sa.column("status", sa.String),
        sa.column("status_at", TS),
    )
    seq, prev = 0, GENESIS
    status: dict[str, tuple[str, object]] = {}
    rows = conn.execute(
        sa.select(
            events.c.id, events.c.record_id, events.c.kind, events.c.at, events.c.hash
        ).order_by(events.c.id)
    ).all()
    for row in rows:
        seq += 1
        link = _ledger_hash(seq, prev, row.hash)
        conn.execute(
            events.update()
            .where(events.c.id == row.id)
            .values(ledger_seq=seq, ledger_prev=prev, ledger_hash=link)
        )
        prev = link
        if row.kind in LIFECYCLE:
            status[row.record_id] = (row.kind, row.at)
    for record_id, (kind, at) in status.items():
        conn.execute(
            records.update()
            .where(records.c.record_id == record_id)
            .values(status=kind, status_at=at)
        )

    with op.batch_alter_table("consent_events") as t:
        t.alter_column("ledger_seq", existing_type=SEQ, nullable=False)
        t.alter_column("ledger_prev", existing_type=sa.String(64), nullable=False)
        t.alter_column("ledger_hash", existing_type=sa.String(64), nullable=False)
        t.create_unique_constraint("uq_consent_events_ledger_seq", ["ledger_seq"])

    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(
        sa.table("ledger_head", sa.column("id"), sa.column("seq"), sa.column("hash")),
        [{"id": 1, "seq": seq, "hash": prev}],
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ledger_seq", SEQ, nullable=False),
        sa.Column("ledger_hash", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("signature", sa.String(128)),
    )
    op.create_index("ix_checkpoints_ledger_seq", "checkpoints", ["ledger_seq"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("purpose_id", sa.String(64)),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("by", sa.String(64)),
        sa.Column("record_id", sa.String(36)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("lifted_at", TS),
    )
    op.create_index("ix_suppressions_phone", "suppressions", ["phone", "purpose_id"])
    op.create_table(
        "contact_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("campaign", sa.String(64)),
        sa.Column("purpose_id", sa.String(64)),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("channel_id", sa.String(128)),
    )
    op.create_index("ix_contact_attempts_phone", "contact_attempts", ["phone"])
    _append_only_triggers(conn.dialect.name)
    if sqlite:
        op.execute("PRAGMA foreign_keys = ON")


def _append_only_triggers(dialect: str) -> None:
    """UPDATE and DELETE on the evidence tables fail; erasure appends, it does not rewrite."""
    for table in APPEND_ONLY:
        message = f"{table} is append-only: evidence is never updated or deleted"
        if dialect == "postgresql":
            op.execute(
                f"""
                CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION '{message}';
                END;
                $$ LANGUAGE plpgsql
                """
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
            )
        else:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_table("contact_attempts")
    op.drop_table("suppressions")
    op.drop_table("checkpoints")
    op.drop_table("ledger_head")
    with op.batch_alter_table("consent_events") as t:
        t.drop_constraint("uq_consent_events_ledger_seq", type_="unique")
        t.drop_column("ledger_hash")
        t.drop_column("ledger_prev")
        t.drop_column("ledger_seq")
    with op.batch_alter_table("consent_records") as t:
        for column in ("erased_at", "status_at", "status", "subject_salt", "phone_source", "kind"):
            t.drop_column(column)
    with op.batch_alter_table("calls") as t:
        t.drop_column("erased_at")
