"""the insurance bureau spoken as NHSA: the msgid of each logical request (its idempotency key)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nhsa_message",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_key", sa.String(length=200), nullable=False),
        sa.Column("infno", sa.String(length=16), nullable=False),
        sa.Column("msgid", sa.String(length=30), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nhsa_message")),
        sa.UniqueConstraint("msgid", name=op.f("uq_nhsa_message_msgid")),
        sa.UniqueConstraint("request_key", name=op.f("uq_nhsa_message_request_key")),
    )


def downgrade() -> None:
    op.drop_table("nhsa_message")
