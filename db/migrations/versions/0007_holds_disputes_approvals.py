"""holds on a visit's sanctions, disputes, approvals; indexes for receivables by age

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("hold_reason", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("hold_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("hold_until_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("auto_discharged", sa.Boolean(), nullable=False, server_default=sa.false()))
        # receivables by age and by department: the unpaid visits, by status and discharge
        batch_op.create_index("ix_visit_receivable", ["payment_status", "discharged_at"], unique=False)
        batch_op.create_index("ix_visit_department", ["department", "payment_status"], unique=False)
    op.create_table(
        "dispute",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("opened_by", sa.String(length=60), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("waived_fen", sa.BigInteger(), nullable=True),
        sa.Column("resolved_by", sa.String(length=60), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_dispute_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute")),
    )
    with op.batch_alter_table("dispute", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_visit_id"), ["visit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_status"), ["status"], unique=False)
        batch_op.create_index(
            "uq_dispute_open_visit",
            ["visit_id"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
    op.create_table(
        "approval",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=60), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=60), nullable=True),
        sa.Column("decision_reason", sa.String(length=300), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_approval_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval")),
    )
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_visit_id"), ["visit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_approval_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("approval")
    op.drop_table("dispute")
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.drop_index("ix_visit_department")
        batch_op.drop_index("ix_visit_receivable")
        for column in ("auto_discharged", "hold_until_at", "hold_started_at", "hold_reason", "hold_kind"):
            batch_op.drop_column(column)
