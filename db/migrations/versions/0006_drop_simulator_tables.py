"""drop the simulators' tables: the simulated bureau and credit platform keep their own storage

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the three of the four tables (as 0001 and 0004 created them) with an index on patient_id
INDEXED = ("sim_credit_record", "sim_insurance_card_event", "sim_insurance_settlement")


def upgrade() -> None:
    for table in INDEXED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_patient_id"))
    for table in (*INDEXED, "sim_credit_score"):
        op.drop_table(table)


def downgrade() -> None:
    op.create_table(
        "sim_credit_record",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_credit_record")),
        sa.UniqueConstraint("request_id", name=op.f("uq_sim_credit_record_request_id")),
    )
    op.create_table(
        "sim_credit_score",
        sa.Column("id_number_hash", sa.String(length=64), nullable=False),
        sa.Column("bank_score", sa.Integer(), nullable=True),
        sa.Column("sesame_score", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_number_hash", name=op.f("pk_sim_credit_score")),
    )
    op.create_table(
        "sim_insurance_card_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_insurance_card_event")),
        sa.UniqueConstraint("request_id", name=op.f("uq_sim_insurance_card_event_request_id")),
    )
    op.create_table(
        "sim_insurance_settlement",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("pooled_fen", sa.BigInteger(), nullable=False),
        sa.Column("personal_fen", sa.BigInteger(), nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("settlement_no", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_insurance_settlement")),
        sa.UniqueConstraint("request_id", name=op.f("uq_sim_insurance_settlement_request_id")),
    )
    for table in INDEXED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_patient_id"), ["patient_id"], unique=False)
