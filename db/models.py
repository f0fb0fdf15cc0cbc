"""Tables. Personal data is stored three ways: an HMAC for look-ups, a masked form for
display, and a Fernet ciphertext for the few places that need the value (sending an SMS,
asking a credit source). Money columns end `_fen` and hold integers; times end `_at`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from db.ebill_columns import EBillColumns

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware in and out on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")

        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


Money = BigInteger


class Patient(Base):
    __tablename__ = "patient"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name_masked: Mapped[str] = mapped_column(String(64))
    name_cipher: Mapped[str] = mapped_column(Text)
    id_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    id_number_masked: Mapped[str | None] = mapped_column(String(32))
    id_number_cipher: Mapped[str | None] = mapped_column(Text)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(32))
    phone_cipher: Mapped[str | None] = mapped_column(Text)
    insured_locally: Mapped[bool] = mapped_column(Boolean, default=False)
    insurance_psn_no: Mapped[str | None] = mapped_column(String(30))  # 人员编号 at the bureau (db/nhsa.py)
    created_at: Mapped[datetime]


class PatientCard(Base):
    __tablename__ = "patient_card"
    __table_args__ = (UniqueConstraint("card_type", "card_no_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    card_type: Mapped[str] = mapped_column(String(20))
    card_no_hash: Mapped[str] = mapped_column(String(64))
    card_no_masked: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]


class Enrolment(Base):
    __tablename__ = "enrolment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    # equals patient_id while the enrolment is active, NULL after: one active enrolment a patient
    active_patient_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    agreement_version: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(20))
    phone_hash: Mapped[str] = mapped_column(String(64))
    phone_masked: Mapped[str] = mapped_column(String(32))
    eligibility_rule: Mapped[str] = mapped_column(String(40))
    eligibility: Mapped[dict[str, Any]]
    enrolled_at: Mapped[datetime]
    unenrolled_at: Mapped[datetime | None]


class SmsCode(Base):
    __tablename__ = "sms_code"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[datetime | None]
    client_ip_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class PatientSession(Base):
    """A signed-in phone. The token names the session; logout and unenrolment revoke it."""

    __tablename__ = "patient_session"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Visit(Base):
    __tablename__ = "visit"
    __table_args__ = (  # receivables by age and by department
        Index("ix_visit_receivable", "payment_status", "discharged_at"),
        Index("ix_visit_department", "department", "payment_status"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    department: Mapped[str] = mapped_column(String(100))
    doctor: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(20))
    registration_fee_fen: Mapped[int] = mapped_column(Money)
    request_hash: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(32))
    payment_status: Mapped[str] = mapped_column(String(16), index=True)
    discharged_at: Mapped[datetime | None]
    arrears_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    card_locked: Mapped[bool] = mapped_column(Boolean, default=False)
    credit_reported: Mapped[bool] = mapped_column(Boolean, default=False)
    # the hold that suspends sanctions (domain.sanctions.HoldKind), as the workflow records it
    hold_kind: Mapped[str | None] = mapped_column(String(16))
    hold_reason: Mapped[str | None] = mapped_column(String(300))
    hold_started_at: Mapped[datetime | None]
    hold_until_at: Mapped[datetime | None]
    auto_discharged: Mapped[bool] = mapped_column(Boolean, default=False)  # the HIS never discharged it
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class VisitEvent(Base):
    __tablename__ = "visit_event"
    __table_args__ = (UniqueConstraint("visit_id", "event_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    stage_after: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime]


class LedgerEntry(Base):
    """Append-only. A balance is the signed sum of a visit's entries (domain.bill)."""

    __tablename__ = "ledger_entry"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount_fen: Mapped[int] = mapped_column(Money)
    item_id: Mapped[str | None] = mapped_column(String(100))
    code: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(16))
    unit_price_fen: Mapped[int | None] = mapped_column(Money)
    quantity: Mapped[int | None] = mapped_column(Integer)
    payment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime]


class VisitNotification(Base):
    """The outbox of `payment_received` signals: written in the payment's own transaction,
    delivered after the commit and retried until Temporal accepts it (ledger/outbox.py)."""

    __tablename__ = "visit_notification"
    __table_args__ = (
        UniqueConstraint("payment_id", "visit_id"),
        Index("ix_visit_notification_pending", "delivered_at", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str] = mapped_column(String(40))
    amount_fen: Mapped[int] = mapped_column(Money)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]  # not before: a deliverer's claim, or the backoff after a failure
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(300))


class Payment(Base):
    __tablename__ = "payment"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))
    amount_fen: Mapped[int] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    # channel payments: the visits asked for (allocated when the money lands)
    visit_ids: Mapped[list[Any] | None]
    channel_trade_no: Mapped[str | None] = mapped_column(String(64))
    refunded_fen: Mapped[int] = mapped_column(Money, default=0, server_default="0")  # refunds that went through
    # insurance card-less payment: the settlement this self-pay part belongs to
    insurance_settlement_id: Mapped[str | None] = mapped_column(String(40), index=True)


class Refund(Base):
    """Money going back to the patient through the channel it came from. The ledger's
    `refund` entry is booked when the refund is asked for (so a credit is returned once);
    a refused refund books a `refund_reversal` and the credit is back for an operator."""

    __tablename__ = "refund"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # our out_refund_no / out_request_no
    payment_id: Mapped[str] = mapped_column(ForeignKey("payment.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))
    amount_fen: Mapped[int] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(String(20))  # overpayment | cancellation | operator
    status: Mapped[str] = mapped_column(String(16), index=True)
    channel_refund_no: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class InsuranceSettlement(Base):
    """医保脱卡支付: the bureau's pre-settlement split of a bill, its settlement of the
    insurance part, and the reversal (冲正) when the self-pay half does not complete."""

    __tablename__ = "insurance_settlement"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    visit_ids: Mapped[list[Any]]
    total_fen: Mapped[int] = mapped_column(Money)
    pooled_fen: Mapped[int] = mapped_column(Money)  # 统筹基金
    personal_fen: Mapped[int] = mapped_column(Money)  # 个人账户
    self_pay_fen: Mapped[int] = mapped_column(Money)  # 自付
    status: Mapped[str] = mapped_column(String(20), index=True)
    channel: Mapped[str] = mapped_column(String(20))  # where the self-pay part is paid
    bureau_presettle_id: Mapped[str | None] = mapped_column(String(40))  # the bureau's 就诊ID (mdtrt_id, 2201)
    bureau_settlement_no: Mapped[str | None] = mapped_column(String(64))  # the bureau's setl_id (2207)
    insurance_payment_id: Mapped[str | None] = mapped_column(String(40))
    self_pay_payment_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(String(300))
    # "card" 医保脱卡支付 (2201-2208, self-pay at our channel), "mobile" 医保移动支付 (6201-6401)
    mode: Mapped[str] = mapped_column(String(10), default="card", server_default="card")
    psn_no: Mapped[str | None] = mapped_column(String(30))  # the person at the bureau it was made for
    pay_ord_id: Mapped[str | None] = mapped_column(String(64), index=True)
    pay_token: Mapped[str | None] = mapped_column(String(128))
    pay_auth_no: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Receipt(EBillColumns, Base):
    """电子票据: issued when a visit settles; a later refund voids it and issues the next
    version (红冲), so every version stays downloadable."""

    __tablename__ = "receipt"
    __table_args__ = (  # ix_receipt_ebill_backlog: the e-bills the platform still owes (api/metrics.py)
        UniqueConstraint("visit_id", "version"),
        Index("ix_receipt_ebill_backlog", "ebill_status", "voided_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the receipt number
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    version: Mapped[int] = mapped_column(Integer)
    total_fen: Mapped[int] = mapped_column(Money)
    paid_fen: Mapped[int] = mapped_column(Money)
    content: Mapped[dict[str, Any]]  # the lines and payments as issued
    check_code: Mapped[str] = mapped_column(String(64))  # HMAC over the content: verifies a copy
    issued_at: Mapped[datetime]
    voided_at: Mapped[datetime | None]


class StatementRun(Base):
    """One day's reconciliation of a channel's statement against the ledger."""

    __tablename__ = "statement_run"
    __table_args__ = (UniqueConstraint("channel", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(20))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, local
    matched: Mapped[int] = mapped_column(Integer)
    mismatches: Mapped[list[Any]]
    channel_total_fen: Mapped[int] = mapped_column(Money)
    ledger_total_fen: Mapped[int] = mapped_column(Money)
    created_at: Mapped[datetime]


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_record"
    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class SmsMessage(Base):
    """The outbox: every message we send, once per idempotency key."""

    __tablename__ = "sms_message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]]
    text: Mapped[str] = mapped_column(Text)
    patient_id: Mapped[str | None] = mapped_column(String(40), index=True)
    visit_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    provider_message_id: Mapped[str | None] = mapped_column(String(64))  # Aliyun's BizId
    accepted_at: Mapped[datetime | None]  # when the provider accepted the text


class CardLockHold(Base):
    """One row a defaulted visit; the card stays locked while any hold is unreleased."""

    __tablename__ = "card_lock_hold"
    __table_args__ = (UniqueConstraint("patient_id", "visit_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    visit_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200))
    held_at: Mapped[datetime]
    released_at: Mapped[datetime | None]


class CreditReport(Base):
    __tablename__ = "credit_report"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    visit_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    amount_fen: Mapped[int] = mapped_column(Money)
    at: Mapped[datetime]
    record_id: Mapped[str | None] = mapped_column(String(40))  # the platform's
    status: Mapped[str | None] = mapped_column(String(24))  # integrations.credit_platform.RecordStatus
    expired_at: Mapped[datetime | None]  # the platform was asked to delete it (retention over)


class CreditObjection(Base):
    """An objection (异议) the credit platform told us of: the dispute it opened on the visit,
    and what the platform was told when that dispute was resolved."""

    __tablename__ = "credit_objection"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the platform's objection id
    visit_id: Mapped[str] = mapped_column(String(64), index=True)
    record_id: Mapped[str] = mapped_column(String(40))
    dispute_id: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500))
    received_at: Mapped[datetime]
    answer: Mapped[str | None] = mapped_column(String(16))  # integrations.credit_platform.ObjectionAnswer
    answered_at: Mapped[datetime | None]


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_subject", "subject_type", "subject_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(60))
    action: Mapped[str] = mapped_column(String(60))
    subject_type: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(300))
    detail: Mapped[dict[str, Any]]
