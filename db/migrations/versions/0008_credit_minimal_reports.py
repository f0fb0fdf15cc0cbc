"""credit reports: the platform's record id, the status, the expiry; objections (异议)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credit_report", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "credit_objection",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("dispute_id", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_objection")),
    )
    with op.batch_alter_table("credit_objection", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_objection_visit_id"), ["visit_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("credit_objection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_objection_visit_id"))
    op.drop_table("credit_objection")
    with op.batch_alter_table("credit_report", schema=None) as batch_op:
        batch_op.drop_column("expired_at")
        batch_op.drop_column("status")
        batch_op.drop_column("record_id")
