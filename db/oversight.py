"""Tables of people's control over sanctions: disputes (申诉) and the second operator's
approval of a write-off. Beside db/models.py (same Base and naming convention)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, Money


class Dispute(Base):
    """A patient contests a bill or a sanction; while it is open the visit has a `dispute`
    hold. One open dispute per visit (a partial unique index)."""

    __tablename__ = "dispute"
    __table_args__ = (
        Index(
            "uq_dispute_open_visit",
            "visit_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # domain.sanctions.DisputeStatus
    reason: Mapped[str] = mapped_column(String(500))
    opened_by: Mapped[str] = mapped_column(String(60))  # patient:{id} | his:{actor}
    opened_at: Mapped[datetime]
    outcome: Mapped[str | None] = mapped_column(String(16))  # domain.sanctions.DisputeOutcome
    note: Mapped[str | None] = mapped_column(String(500))
    waived_fen: Mapped[int | None] = mapped_column(Money)
    resolved_by: Mapped[str | None] = mapped_column(String(60))
    resolved_at: Mapped[datetime | None]


class Approval(Base):
    """An action that needs a second operator (a write-off): asked by one, decided by another."""

    __tablename__ = "approval"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    visit_id: Mapped[str] = mapped_column(ForeignKey("visit.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # domain.sanctions.ApprovalStatus
    requested_by: Mapped[str] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(300))
    requested_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(60))
    decision_reason: Mapped[str | None] = mapped_column(String(300))
    decided_at: Mapped[datetime | None]
