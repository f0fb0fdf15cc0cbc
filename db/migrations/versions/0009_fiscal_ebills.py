"""fiscal medical e-bills (医疗收费电子票据): the platform's bill on each receipt version

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 11:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ebill_bus_no", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("ebill_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("ebill_batch_code", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("ebill_no", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("ebill_random", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("ebill_qr_code", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ebill_picture_url", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("ebill_issued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ebill_written_off_no", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("ebill_written_off_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ebill_error", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_receipt_ebill_bus_no"), ["ebill_bus_no"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("receipt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipt_ebill_bus_no"))
        batch_op.drop_column("ebill_error")
        batch_op.drop_column("ebill_written_off_at")
        batch_op.drop_column("ebill_written_off_no")
        batch_op.drop_column("ebill_issued_at")
        batch_op.drop_column("ebill_picture_url")
        batch_op.drop_column("ebill_qr_code")
        batch_op.drop_column("ebill_random")
        batch_op.drop_column("ebill_no")
        batch_op.drop_column("ebill_batch_code")
        batch_op.drop_column("ebill_status")
        batch_op.drop_column("ebill_bus_no")
