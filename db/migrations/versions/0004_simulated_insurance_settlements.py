"""simulated insurance settlements; the bureau's pre-settlement id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:09:48.927162
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
    with op.batch_alter_table("sim_insurance_settlement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_insurance_settlement_patient_id"), ["patient_id"], unique=False)
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bureau_presettle_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.drop_column("bureau_presettle_id")
    with op.batch_alter_table("sim_insurance_settlement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_insurance_settlement_patient_id"))

    op.drop_table("sim_insurance_settlement")
