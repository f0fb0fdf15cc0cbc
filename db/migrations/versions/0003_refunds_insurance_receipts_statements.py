"""refunds, insurance settlements, receipts and statements

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 03:53:01.678583
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "statement_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("mismatches", sa.JSON(), nullable=False),
        sa.Column("channel_total_fen", sa.BigInteger(), nullable=False),
        sa.Column("ledger_total_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_run")),
        sa.UniqueConstraint("channel", "day", name=op.f("uq_statement_run_channel_day")),
    )
    op.create_table(
        "insurance_settlement",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("visit_ids", sa.JSON(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("pooled_fen", sa.BigInteger(), nullable=False),
        sa.Column("personal_fen", sa.BigInteger(), nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("bureau_settlement_no", sa.String(length=64), nullable=True),
        sa.Column("insurance_payment_id", sa.String(length=40), nullable=True),
        sa.Column("self_pay_payment_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_insurance_settlement_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insurance_settlement")),
    )
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_insurance_settlement_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_insurance_settlement_status"), ["status"], unique=False)

    op.create_table(
        "receipt",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("paid_fen", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("check_code", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_receipt_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipt")),
        sa.UniqueConstraint("visit_id", "version", name=op.f("uq_receipt_visit_id_version")),
    )
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipt_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipt_visit_id"), ["visit_id"], unique=False)

    op.create_table(
        "refund",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel_refund_no", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["payment_id"], ["payment.id"], name=op.f("fk_refund_payment_id_payment")),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_refund_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
    )
    with op.batch_alter_table("refund", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refund_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refund_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refund_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_refund_visit_id"), ["visit_id"], unique=False)

    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refunded_fen", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("insurance_settlement_id", sa.String(length=40), nullable=True))
        batch_op.alter_column(
            "status", existing_type=sa.VARCHAR(length=16), type_=sa.String(length=20), existing_nullable=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_insurance_settlement_id"), ["insurance_settlement_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_insurance_settlement_id"))
        batch_op.alter_column(
            "status", existing_type=sa.String(length=20), type_=sa.VARCHAR(length=16), existing_nullable=False
        )
        batch_op.drop_column("insurance_settlement_id")
        batch_op.drop_column("refunded_fen")

    with op.batch_alter_table("refund", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refund_visit_id"))
        batch_op.drop_index(batch_op.f("ix_refund_status"))
        batch_op.drop_index(batch_op.f("ix_refund_payment_id"))
        batch_op.drop_index(batch_op.f("ix_refund_patient_id"))

    op.drop_table("refund")
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipt_visit_id"))
        batch_op.drop_index(batch_op.f("ix_receipt_patient_id"))

    op.drop_table("receipt")
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_insurance_settlement_status"))
        batch_op.drop_index(batch_op.f("ix_insurance_settlement_patient_id"))

    op.drop_table("insurance_settlement")
    op.drop_table("statement_run")
