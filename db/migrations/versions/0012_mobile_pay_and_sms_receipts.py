"""医保移动支付 on the settlement (its mode, the bureau's payOrdId and payToken, the patient's
payAuthNo), the patient's number at the bureau (psn_no, from the HIS's card read), the SMS
provider's own message id (Aliyun BizId) with the time it accepted the text, and an index of
the receipts whose fiscal e-bill is still owed by the platform

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=10), nullable=False, server_default="card"))
        batch_op.add_column(sa.Column("pay_ord_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pay_token", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("pay_auth_no", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("psn_no", sa.String(length=30), nullable=True))
        batch_op.create_index("ix_insurance_settlement_pay_ord_id", ["pay_ord_id"], unique=False)
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.add_column(sa.Column("insurance_psn_no", sa.String(length=30), nullable=True))
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_message_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.create_index("ix_receipt_ebill_backlog", ["ebill_status", "voided_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_column("insurance_psn_no")
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.drop_index("ix_receipt_ebill_backlog")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_column("accepted_at")
        batch_op.drop_column("provider_message_id")
    with op.batch_alter_table("insurance_settlement", schema=None) as batch_op:
        batch_op.drop_index("ix_insurance_settlement_pay_ord_id")
        batch_op.drop_column("psn_no")
        batch_op.drop_column("pay_auth_no")
        batch_op.drop_column("pay_token")
        batch_op.drop_column("pay_ord_id")
        batch_op.drop_column("mode")
