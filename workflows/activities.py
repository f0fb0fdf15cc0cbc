"""The activities the workflows call, declared once as typed stubs (name, input, result).

workflows/ may not import activities/ (that is all I/O), so a workflow calls these stubs:
`workflow.execute_activity(a.get_balance, inp, ...)` checks the input's type and gives the
result's, as the Temporal samples' typed references do. The implementations in activities/
register under the same names with the same types (tests/workflows/test_activity_stubs.py);
a stub itself is never run by a worker."""

from __future__ import annotations

from typing import NoReturn

from temporalio import activity

from workflows import contracts as c, contracts_credit as k, contracts_mobile as m, contracts_oversight as o


def _stub(name: str) -> NoReturn:
    raise NotImplementedError(f"{name} is a declaration: the worker runs the implementation in activities/")


# --- the visit's ledger (activities.ledger) ------------------------------------------------


@activity.defn(name=c.BOOK_REGISTRATION)
async def book_registration(inp: c.BookRegistrationInput) -> c.BalanceResult:
    """Book the registration fee (挂号费) once; the visit's bill after it."""
    _stub(c.BOOK_REGISTRATION)


@activity.defn(name=c.APPLY_VISIT_EVENT)
async def apply_visit_event(inp: c.ApplyVisitEventInput) -> c.BalanceResult:
    """Record a clinical event and book its charges and reversals once; the bill after it."""
    _stub(c.APPLY_VISIT_EVENT)


@activity.defn(name=c.GET_BALANCE)
async def get_balance(inp: c.BalanceInput) -> c.BalanceResult:
    """The visit's bill as the ledger has it now."""
    _stub(c.GET_BALANCE)


@activity.defn(name=c.RECORD_PAYMENT_STATUS)
async def record_payment_status(inp: c.RecordPaymentStatusInput) -> None:
    """Write the visit's payment status, deadlines and sanctions where the API reads them."""
    _stub(c.RECORD_PAYMENT_STATUS)


@activity.defn(name=o.RECORD_OPERATOR_ACTION)
async def record_operator_action(inp: o.RecordOperatorActionInput) -> c.BalanceResult:
    """Write what an operator action decided, once: audit, waiver, dispute or approval row,
    the visit's columns; the bill after it."""
    _stub(o.RECORD_OPERATOR_ACTION)


@activity.defn(name=c.REFUND_CREDIT)
async def refund_credit(inp: c.RefundCreditInput) -> c.RefundCreditResult:
    """Book refunds of the visit's credit to the payments that made it (退费)."""
    _stub(c.REFUND_CREDIT)


@activity.defn(name=c.ISSUE_RECEIPT)
async def issue_receipt(inp: c.IssueReceiptInput) -> c.IssueReceiptResult:
    """Issue the electronic receipt (电子票据) of a settled visit, voiding an older one."""
    _stub(c.ISSUE_RECEIPT)


# --- the patient ---------------------------------------------------------------------------


@activity.defn(name=c.SEND_SMS)
async def send_sms(inp: c.SendSmsInput) -> int | None:
    """Text the patient (the number is looked up in the activity); the message id, if sent."""
    _stub(c.SEND_SMS)


# --- sanctions: the insurance bureau and the credit platform -------------------------------


@activity.defn(name=c.LOCK_CARD)
async def lock_card(inp: c.CardLockInput) -> c.CardLockResult:
    """This visit holds the patient's insurance card locked (the bureau is asked once)."""
    _stub(c.LOCK_CARD)


@activity.defn(name=c.UNLOCK_CARD)
async def unlock_card(inp: c.CardLockInput) -> c.CardLockResult:
    """This visit releases its hold (the bureau unlocks when no other visit holds one)."""
    _stub(c.UNLOCK_CARD)


@activity.defn(name=c.REPORT_CREDIT)
async def report_credit(inp: c.ReportCreditInput) -> c.ReportCreditResult:
    """Report a default to the credit platform, or correct it once paid."""
    _stub(c.REPORT_CREDIT)


@activity.defn(name=k.ANSWER_CREDIT_OBJECTIONS)
async def answer_credit_objections(inp: k.CreditSweepInput) -> k.CreditSweepResult:
    """Tell the credit platform how each objection's dispute ended: corrected, or confirmed."""
    _stub(k.ANSWER_CREDIT_OBJECTIONS)


@activity.defn(name=k.EXPIRE_CREDIT_RECORDS)
async def expire_credit_records(inp: k.CreditSweepInput) -> k.CreditSweepResult:
    """Ask the credit platform to delete the records whose debt ended before the retention."""
    _stub(k.EXPIRE_CREDIT_RECORDS)


# --- payment channels and refunds ----------------------------------------------------------


@activity.defn(name=c.FIND_STALE_PAYMENTS)
async def find_stale_payments(inp: c.ReconcileInput) -> c.StalePaymentsResult:
    """Channel payments pending for too long: their notification may be lost."""
    _stub(c.FIND_STALE_PAYMENTS)


@activity.defn(name=c.RECONCILE_PAYMENT)
async def reconcile_payment(inp: c.ReconcilePaymentInput) -> c.ReconcilePaymentResult:
    """Ask the channel about one payment; land the money it reports."""
    _stub(c.RECONCILE_PAYMENT)


@activity.defn(name=c.CLOSE_PAYMENT)
async def close_payment(inp: c.ReconcilePaymentInput) -> c.ReconcilePaymentResult:
    """Close an unpaid order at its channel; paid after all, the money lands."""
    _stub(c.CLOSE_PAYMENT)


@activity.defn(name=c.SUBMIT_REFUND)
async def submit_refund(inp: c.RefundInput) -> c.RefundStatusResult:
    """Ask the channel to send a refund back (a window payment: to an operator)."""
    _stub(c.SUBMIT_REFUND)


@activity.defn(name=c.CHECK_REFUND)
async def check_refund(inp: c.RefundInput) -> c.RefundStatusResult:
    """Ask the channel whether a refund went."""
    _stub(c.CHECK_REFUND)


@activity.defn(name=c.FIND_STALE_REFUNDS)
async def find_stale_refunds(inp: c.ReconcileInput) -> c.StaleRefundsResult:
    """Refunds not yet final whose workflow may never have started."""
    _stub(c.FIND_STALE_REFUNDS)


@activity.defn(name=c.RECONCILE_STATEMENT)
async def reconcile_statement(inp: c.ReconcileStatementInput) -> c.StatementResult:
    """Match a channel's statement of a day against the ledger."""
    _stub(c.RECONCILE_STATEMENT)


# --- insurance card-less payment (医保脱卡支付) ---------------------------------------------


@activity.defn(name=c.SETTLE_INSURANCE)
async def settle_insurance(inp: c.SettlementInput) -> c.SettlementResult:
    """Settle the insurance part of a pre-settled bill with the bureau."""
    _stub(c.SETTLE_INSURANCE)


@activity.defn(name=c.REVERSE_INSURANCE)
async def reverse_insurance(inp: c.SettlementInput) -> c.SettlementResult:
    """Reverse an insurance settlement at the bureau (冲正)."""
    _stub(c.REVERSE_INSURANCE)


@activity.defn(name=c.BOOK_INSURANCE)
async def book_insurance(inp: c.SettlementInput) -> c.SettlementResult:
    """Book the insurance part in the ledger once the self-pay part landed."""
    _stub(c.BOOK_INSURANCE)


# --- insurance mobile payment (医保移动支付) ------------------------------------------------


@activity.defn(name=m.SETTLE_MOBILE_ORDER)
async def settle_mobile_order(inp: c.SettlementInput) -> c.SettlementResult:
    """Ask the bureau where a mobile order stands (6301); paid: book its three parts once."""
    _stub(m.SETTLE_MOBILE_ORDER)


@activity.defn(name=m.REVOKE_MOBILE_ORDER)
async def revoke_mobile_order(inp: c.SettlementInput) -> c.SettlementResult:
    """Take an unpaid mobile order back (6401); paid meanwhile: book it as settle_mobile_order does."""
    _stub(m.REVOKE_MOBILE_ORDER)


@activity.defn(name=m.FIND_ORPHANED_MOBILE_ORDERS)
async def find_orphaned_mobile_orders(inp: c.ReconcileInput) -> m.MobileOrdersResult:
    """Mobile orders still paying past the deadline (their workflow may be gone)."""
    _stub(m.FIND_ORPHANED_MOBILE_ORDERS)
