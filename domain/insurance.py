"""医保脱卡支付 (card-less insurance payment): where one settlement of a bill stands. The saga
that moves it is workflows/insurance.py; the bureau's own records are not ours. Pure: data only."""

from __future__ import annotations

from enum import StrEnum


class SettlementStatus(StrEnum):
    presettled = "presettled"  # the bureau split the bill (pooled, personal, self-pay); nothing is paid
    insurance_settled = "insurance_settled"  # the bureau paid its part; the self-pay part is awaited
    completed = "completed"  # both parts landed and are booked in the ledger
    reversed = "reversed"  # the self-pay part did not land: the insurance part was reversed (冲正)
    failed = "failed"  # the bureau refused to settle
