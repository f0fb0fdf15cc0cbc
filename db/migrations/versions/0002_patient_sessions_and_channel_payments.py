"""patient sessions and channel payments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 02:14:50.941081
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "patient_session",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_session")),
    )
    with op.batch_alter_table("patient_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_session_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_patient_session_phone_hash"), ["phone_hash"], unique=False)

    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visit_ids", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("channel_trade_no", sa.String(length=64), nullable=True))

    with op.batch_alter_table("sms_code", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_ip_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_sms_code_client_ip_hash"), ["client_ip_hash"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("sms_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_code_client_ip_hash"))
        batch_op.drop_column("client_ip_hash")

    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_column("channel_trade_no")
        batch_op.drop_column("visit_ids")

    with op.batch_alter_table("patient_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_session_phone_hash"))
        batch_op.drop_index(batch_op.f("ix_patient_session_patient_id"))

    op.drop_table("patient_session")
