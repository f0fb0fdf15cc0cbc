"""The payloads of 医保移动支付 (NHSA mobile payment): MobileInsurancePaymentWorkflow, its
activities and the reconciliation's search for orders left paying. Beside workflows/contracts.py
(which it shares SettlementInput and SettlementResult with), as contracts_credit.py is."""

from __future__ import annotations

from dataclasses import dataclass, field

SETTLE_MOBILE_ORDER = "settle_mobile_order"
REVOKE_MOBILE_ORDER = "revoke_mobile_order"
FIND_ORPHANED_MOBILE_ORDERS = "find_orphaned_mobile_orders"
ORDER_UPDATED = "order_updated"  # the signal: the platform notified us about the order
# the failure of a 6301 that says paid with other figures than the ordered split: nothing booked
SPLIT_MISMATCH = "mobile_split_mismatch"


def mobile_workflow_id(settlement_id: str) -> str:
    return f"insurance-mobile-{settlement_id}"


@dataclass(frozen=True, kw_only=True)
class MobilePaymentInput:
    settlement_id: str
    fund_fen: int  # 统筹基金 (fundPay)
    personal_fen: int  # 个人账户 (psnAcctPay)
    cash_fen: int  # the cash part (ownPayAmt), paid at the platform's cashier
    timeout_seconds: float  # unpaid this long after 6202: taken back (6401); 0: at once


@dataclass(frozen=True, kw_only=True)
class MobileOrdersResult:
    orders: list[MobilePaymentInput] = field(default_factory=list)
