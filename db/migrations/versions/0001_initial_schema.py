"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 01:17:20.133235
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=60), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("subject_type", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_subject", ["subject_type", "subject_id"], unique=False)

    op.create_table(
        "card_lock_hold",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_lock_hold")),
        sa.UniqueConstraint("patient_id", "visit_id", name=op.f("uq_card_lock_hold_patient_id_visit_id")),
    )
    with op.batch_alter_table("card_lock_hold", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_card_lock_hold_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "credit_report",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_report")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_report_idempotency_key")),
    )
    with op.batch_alter_table("credit_report", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_report_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("key", sa.String(length=240), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_record")),
    )
    op.create_table(
        "patient",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name_masked", sa.String(length=64), nullable=False),
        sa.Column("name_cipher", sa.Text(), nullable=False),
        sa.Column("id_number_hash", sa.String(length=64), nullable=True),
        sa.Column("id_number_masked", sa.String(length=32), nullable=True),
        sa.Column("id_number_cipher", sa.Text(), nullable=True),
        sa.Column("phone_hash", sa.String(length=64), nullable=True),
        sa.Column("phone_masked", sa.String(length=32), nullable=True),
        sa.Column("phone_cipher", sa.Text(), nullable=True),
        sa.Column("insured_locally", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_id_number_hash"), ["id_number_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_patient_phone_hash"), ["phone_hash"], unique=False)

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
    with op.batch_alter_table("sim_credit_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_credit_record_patient_id"), ["patient_id"], unique=False)

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
    with op.batch_alter_table("sim_insurance_card_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sim_insurance_card_event_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "sms_code",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_code")),
    )
    with op.batch_alter_table("sms_code", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_code_phone_hash"), ["phone_hash"], unique=False)

    op.create_table(
        "sms_message",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("phone_masked", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=True),
        sa.Column("visit_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_message")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sms_message_idempotency_key")),
    )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_message_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sms_message_phone_hash"), ["phone_hash"], unique=False)

    op.create_table(
        "enrolment",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("active_patient_id", sa.String(length=40), nullable=True),
        sa.Column("agreement_version", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("phone_masked", sa.String(length=32), nullable=False),
        sa.Column("eligibility_rule", sa.String(length=40), nullable=False),
        sa.Column("eligibility", sa.JSON(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unenrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_enrolment_patient_id_patient")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment")),
        sa.UniqueConstraint("active_patient_id", name=op.f("uq_enrolment_active_patient_id")),
    )
    with op.batch_alter_table("enrolment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrolment_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_card",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("card_type", sa.String(length=20), nullable=False),
        sa.Column("card_no_hash", sa.String(length=64), nullable=False),
        sa.Column("card_no_masked", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_patient_card_patient_id_patient")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_card")),
        sa.UniqueConstraint("card_type", "card_no_hash", name=op.f("uq_patient_card_card_type_card_no_hash")),
    )
    with op.batch_alter_table("patient_card", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_card_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "payment",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_payment_patient_id_patient")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "visit",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=False),
        sa.Column("doctor", sa.String(length=100), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("registration_fee_fen", sa.BigInteger(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("payment_status", sa.String(length=16), nullable=False),
        sa.Column("discharged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arrears_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("card_locked", sa.Boolean(), nullable=False),
        sa.Column("credit_reported", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_visit_patient_id_patient")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit")),
    )
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_visit_payment_status"), ["payment_status"], unique=False)

    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.String(length=100), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("category", sa.String(length=16), nullable=True),
        sa.Column("unit_price_fen", sa.BigInteger(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_ledger_entry_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entry_idempotency_key")),
    )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_entry_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entry_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entry_visit_id"), ["visit_id"], unique=False)

    op.create_table(
        "visit_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("stage_after", sa.String(length=32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], name=op.f("fk_visit_event_visit_id_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_event")),
        sa.UniqueConstraint("visit_id", "event_id", name=op.f("uq_visit_event_visit_id_event_id")),
    )
    with op.batch_alter_table("visit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_event_visit_id"), ["visit_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("visit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_event_visit_id"))

    op.drop_table("visit_event")
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_visit_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entry_payment_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entry_patient_id"))

    op.drop_table("ledger_entry")
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_payment_status"))
        batch_op.drop_index(batch_op.f("ix_visit_patient_id"))

    op.drop_table("visit")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_patient_id"))

    op.drop_table("payment")
    with op.batch_alter_table("patient_card", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_card_patient_id"))

    op.drop_table("patient_card")
    with op.batch_alter_table("enrolment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolment_patient_id"))

    op.drop_table("enrolment")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_message_phone_hash"))
        batch_op.drop_index(batch_op.f("ix_sms_message_patient_id"))

    op.drop_table("sms_message")
    with op.batch_alter_table("sms_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_code_phone_hash"))

    op.drop_table("sms_code")
    with op.batch_alter_table("sim_insurance_card_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_insurance_card_event_patient_id"))

    op.drop_table("sim_insurance_card_event")
    op.drop_table("sim_credit_score")
    with op.batch_alter_table("sim_credit_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sim_credit_record_patient_id"))

    op.drop_table("sim_credit_record")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_phone_hash"))
        batch_op.drop_index(batch_op.f("ix_patient_id_number_hash"))

    op.drop_table("patient")
    op.drop_table("idempotency_record")
    with op.batch_alter_table("credit_report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_report_patient_id"))

    op.drop_table("credit_report")
    with op.batch_alter_table("card_lock_hold", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_lock_hold_patient_id"))

    op.drop_table("card_lock_hold")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_subject")

    op.drop_table("audit_log")
