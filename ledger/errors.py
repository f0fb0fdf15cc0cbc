"""The ledger's refusals: one class per business case, each with a stable `code` (the
problem `code` the API answers) and no HTTP status; api/errors.py maps each class to its
status, in one table."""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """A request the ledger's rules refuse; `detail` says why, `extra` adds fields to the answer."""

    code: ClassVar[str] = "ledger_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class VisitNotFound(LedgerError):
    code = "visit_not_found"


class PaymentNotFound(LedgerError):
    code = "payment_not_found"


class RefundNotFound(LedgerError):
    code = "refund_not_found"


class NothingToPay(LedgerError):
    code = "nothing_to_pay"


class AmountExceedsBalance(LedgerError):
    code = "amount_exceeds_balance"


class AmountMismatch(LedgerError):
    """A channel tells an amount (or a status) that does not match the order."""

    code = "amount_mismatch"


class PaymentConflict(LedgerError):
    """The payment cannot make that move (paid after it failed for good, ...)."""

    code = "payment_conflict"


class RefundNotManual(LedgerError):
    code = "refund_not_manual"


class NoCredit(LedgerError):
    code = "no_credit"
