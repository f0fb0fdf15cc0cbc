"""Payment after the visit, the patent's figure 4: the bill is due at discharge, in arrears
(欠费) from the end of the visit day with a reminder every day, and past the deadline the
sanctions (workflows/sanctions.py); paid at any point, the visit settles and every sanction is
undone. A settled visit may stay open a while for cancellations (退费), refunded at once.

`PaymentPolicy.decide` (domain/policy.py) says what comes next; this module does it. Every
step is decided on the ledger's balance of that moment, so money whose signal never came
still stops the reminders and the sanctions."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from domain.money import format_fen, yuan
from domain.policy import Action, Decision, PaymentStatus
from domain.sanctions import expire
from workflows import activities as a, contracts as c
from workflows.lifetime import history_full
from workflows.oversight import close_on_settle
from workflows.refund import start_refunds
from workflows.sanctions import impose, lift, send_lock_notice, send_notice
from workflows.visit_context import VisitContext


async def collect(v: VisitContext) -> bool:
    """From discharge until the balance is paid (or refunded, or written off): figure 4's
    loop. False when the history is long enough to continue as new first. Each step but the
    wait is taken under the visit's lock, decided on what is in force once it is held: an
    action (a hold, a waiver, a write-off) that landed meanwhile wins."""
    deadlines = v.deadlines()
    assert deadlines is not None
    async with v.lock:
        await v.refresh_balance()
        fresh = True  # the balance was read from the ledger since the last step
        if v.balance > 0 and v.input.carried is None:
            await v.set_status(PaymentStatus.due, "discharged with a balance")
            deadline = v.policy.local_label(deadlines.default_at)
            await v.sms("bill_ready", {"amount": yuan(v.balance), "deadline": deadline})
            fresh = False
    while True:
        async with v.lock:
            if v.wake:
                await v.refresh_balance()
                fresh = True
            if v.status is PaymentStatus.written_off:
                return True
            await end_pause(v)
            decision = v.policy.decide(v.payment_state(), workflow.now())
            if decision.action is not Action.wait:
                if not fresh:
                    await v.refresh_balance()  # money booked whose signal never came stops this step
                    fresh = True
                    continue
                fresh = False
                if decision.action is Action.settle:
                    if v.balance < 0:
                        await return_credit(v, "cancellation")
                    await settle(v)
                    return True
                await act(v, decision)
                continue
        fresh = False
        if history_full(v):
            return False
        await act(v, decision)  # the wait, the lock let go


async def end_pause(v: VisitContext) -> None:
    """An operator's pause whose end has come ends, and the visit records it."""
    ended = expire(v.sanctions, workflow.now(), notice_sent=v.notice_sent_at is not None)
    if ended != v.sanctions:
        v.sanctions = ended
        await v.set_status(v.status, "the operator's pause ended")


async def act(v: VisitContext, decision: Decision) -> None:
    """One step of the unpaid visit."""
    match decision.action:
        case Action.enter_arrears:
            v.in_arrears = True
            await v.set_status(PaymentStatus.arrears, "unpaid at the end of the visit day")
        case Action.send_dunning:
            await remind(v, decision)
        case Action.send_notice:
            await send_notice(v)
        case Action.default:
            await impose(v)
        case Action.send_lock_notice:
            await send_lock_notice(v)
        case Action.wait if decision.until is None:  # on hold, or nothing left to send: a change wakes it
            await workflow.wait_condition(lambda: v.wake)
        case Action.wait:
            assert decision.until is not None
            try:
                await workflow.wait_condition(
                    lambda: v.wake,
                    timeout=max(decision.until - workflow.now(), timedelta(0)),
                    timeout_summary=f"payment wait until {decision.until.isoformat()}",
                )
            except TimeoutError:
                pass
        case Action.settle:
            raise AssertionError("settled by collect")


async def remind(v: VisitContext, decision: Decision) -> None:
    """The daily dunning text (407): the first says the visit is in arrears; after the
    deadline it says what happened and how to undo it, not a date already past."""
    v.dunning_sent += 1
    v.last_dunning_at = workflow.now()
    deadlines = v.deadlines()
    assert deadlines is not None
    if decision.after_default:
        template, params = "dunning_defaulted", {"amount": yuan(v.balance)}
    else:
        template = "arrears" if decision.first_dunning else "dunning"
        params = {"amount": yuan(v.balance), "deadline": v.policy.local_label(deadlines.default_at)}
    await v.sms(template, params, step=f"dunning-{v.dunning_sent}")


async def settle(v: VisitContext) -> None:
    """Paid (404): undo the sanctions, record `settled`, issue the receipt, thank the patient."""
    undo = v.sanctions.defaulted and not v.sanctions.released
    await close_on_settle(v)
    await lift(v)
    await v.set_status(PaymentStatus.settled, "balance paid")
    await issue_receipt(v)
    bill = await v.read_bill()
    if bill.total_fen > 0 and bill.paid_fen > 0:  # a bill waived whole was not paid: no thanks
        template = "payment_received_unlocked" if undo else "payment_received"
        await v.sms(template, {"amount": yuan(bill.total_fen)})


async def return_credit(v: VisitContext, reason: str) -> None:
    """The ledger shows a credit (an order cancelled after payment, 退费): send it back to the
    payments that made it, each refund in its own workflow."""
    result = await v.step(
        a.refund_credit,
        c.RefundCreditInput(visit_id=v.visit_id, patient_id=v.patient_id, reason=reason),
        f"refund the credit of {format_fen(-v.balance)}",
    )
    await start_refunds(result.refunds)
    v.refunded_fen += sum(r.amount_fen for r in result.refunds)
    await v.refresh_balance()


async def issue_receipt(v: VisitContext) -> None:
    receipt = await v.step(
        a.issue_receipt, c.IssueReceiptInput(visit_id=v.visit_id), "issue the electronic receipt (电子票据)"
    )
    if receipt.receipt_id:
        v.receipt = f"{receipt.receipt_id} v{receipt.version}"
        v.describe()


async def keep_open_for_refunds(v: VisitContext) -> None:
    """Settled, the visit stays open a while: a cancellation now (退费) is refunded."""
    v.refunds_until = workflow.now() + timedelta(seconds=v.policy.refund_window_seconds)
    v.describe()
    while (left := v.refunds_until - workflow.now()) > timedelta(0):
        try:
            await workflow.wait_condition(lambda: v.wake, timeout=left, timeout_summary="refund window closes")
        except TimeoutError:
            break
        await v.refresh_balance()
        if v.balance < 0:
            await return_credit(v, "cancellation")
            await issue_receipt(v)  # the old one is voided (红冲), the new one shows the refund
    v.refunds_until = None
    v.describe()
