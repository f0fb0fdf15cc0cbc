"""The fiscal e-bill's columns on each receipt version (财政电子票据, migrations 0009 and 0011), kept apart
from db/models.py: `Receipt` mixes them in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class EBillColumns:
    """busNo is our idempotency key ("{receipt id}-{version}"); the status goes pending ->
    issued -> written_off (冲红), or failed (the refusal in ebill_error), or not_required.
    `ebill_request` is the bill as first sent (its inputs, the payer's name encrypted), so that
    a retry sends the same body under the same busNo whatever changed since."""

    ebill_bus_no: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    ebill_status: Mapped[str | None] = mapped_column(String(16))
    ebill_batch_code: Mapped[str | None] = mapped_column(String(50))  # 票据代码
    ebill_no: Mapped[str | None] = mapped_column(String(40))  # 票据号码
    ebill_random: Mapped[str | None] = mapped_column(String(20))  # 校验码
    ebill_qr_code: Mapped[str | None] = mapped_column(Text)  # base64 PNG of the bill's QR code
    ebill_picture_url: Mapped[str | None] = mapped_column(String(500))  # the platform's page of the bill
    ebill_issued_at: Mapped[datetime | None]
    ebill_written_off_no: Mapped[str | None] = mapped_column(String(40))  # the red bill's number
    ebill_written_off_at: Mapped[datetime | None]
    ebill_error: Mapped[str | None] = mapped_column(String(200))  # the platform's last refusal
    ebill_request: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the bill as first sent
