"""Sanctions, the patent's figure 4 (steps 409-410): a bill unpaid past the deadline locks
the patient's insurance card and is reported to the credit platform; payment undoes both.

The patient is told at each step: the pre-default notice a full notice period before the
lock (credit-reporting rules forbid a report without one), the card_locked text after it
(outside quiet hours), and on payment that the lock is lifted. Each sanction and its undoing
is a background step tried until it succeeds (workflows.retries.SANCTION)."""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow

from domain.money import format_fen, yuan
from domain.policy import PaymentStatus
from domain.sanctions import CreditReportKind, Sanction, corrected, imposed, lock_released
from workflows import activities as a, contracts as c
from workflows.retries import SANCTION
from workflows.visit_context import VisitContext


async def send_notice(v: VisitContext) -> None:
    """The pre-default notice: pay before the lock, or the card is locked and reported. Sent
    to the phone and the in-app inbox; a number the gateway refuses still has the notice in
    the inbox, so the lock waits for it all the same."""
    deadlines = v.deadlines()
    assert deadlines is not None
    lock_at = v.policy.lock_at(deadlines, workflow.now(), workflow.now(), v.sanctions.notice_moved_seconds)
    await v.sms("pre_default", {"amount": yuan(v.balance), "deadline": v.policy.local_label(lock_at)})
    v.notice_sent_at = workflow.now()
    v.describe()


async def impose(v: VisitContext) -> None:
    """Default (409, 410): lock the insurance card, report the debt, record `defaulted`.

    Taken under the visit's lock, let go while the bureau and the platform answer: a hold, a
    waiver, a payment or a write-off may land meanwhile. After each call the visit looks again
    and, no longer due for sanctions, takes back what was done (never a report after a hold)."""
    reason = f"visit {v.visit_id} unpaid past the deadline"
    async with v.unlocked():
        lock = await v.step(
            a.lock_card,
            c.CardLockInput(patient_id=v.patient_id, visit_id=v.visit_id, reason=reason, at=workflow.now()),
            "lock the insurance card",
            SANCTION,
        )
    v.sanctions = replace(v.sanctions, card_locked=lock.locked)
    if not await still_due(v):
        await lift(v, "held before the default")
        v.describe()
        return
    amount = v.balance
    async with v.unlocked():
        await v.step(
            a.report_credit,
            c.ReportCreditInput(
                kind=CreditReportKind.report,
                patient_id=v.patient_id,
                visit_id=v.visit_id,
                amount_fen=amount,
                at=workflow.now(),
                notice_sent_at=v.notice_sent_at,  # §15: the report carries the notice's evidence
            ),
            f"report default of {format_fen(amount)}",
            SANCTION,
        )
    v.sanctions = replace(v.sanctions, credit_reported=True, reported_fen=amount)
    if not await still_due(v):
        await lift(v, "held before the default")
        v.describe()
        return
    v.sanctions = imposed(v.sanctions, card_locked=v.sanctions.card_locked, reported_fen=amount)
    await v.set_status(PaymentStatus.defaulted, reason)


async def still_due(v: VisitContext) -> bool:
    """Whether the sanctions still go ahead after a call made with the lock let go."""
    if v.wake:
        await v.refresh_balance()
    return not v.closed and v.balance > 0 and v.sanctions.may(Sanction.credit_report)


async def send_lock_notice(v: VisitContext) -> None:
    """The card_locked text; the lock may come at night, its text waits for the morning."""
    await v.sms("card_locked", {"amount": yuan(v.balance)})
    v.sanctions = replace(v.sanctions, lock_notified=True)


async def lift(v: VisitContext, why: str = "paid") -> None:
    """Undo what is in force: release this visit's hold on the card (the bureau unlocks it
    when no other defaulted visit holds it) and correct the credit record."""
    if v.sanctions.card_locked or v.sanctions.defaulted:
        await release_card(v, why)
    if v.sanctions.credit_reported:
        await v.step(
            a.report_credit,
            c.ReportCreditInput(
                kind=CreditReportKind.correction,
                patient_id=v.patient_id,
                visit_id=v.visit_id,
                amount_fen=v.sanctions.reported_fen,
                at=workflow.now(),
            ),
            f"tell the credit platform the debt is {why}",
            SANCTION,
        )
        v.sanctions = corrected(v.sanctions)


async def release_card(v: VisitContext, why: str, *, by_operator: bool = False) -> None:
    """Release this visit's hold on the insurance card (the card stays locked while another
    defaulted visit of the patient holds it: activities/insurance.py counts the holds)."""
    lock = await v.step(
        a.unlock_card,
        c.CardLockInput(
            patient_id=v.patient_id, visit_id=v.visit_id, reason=f"visit {v.visit_id} {why}", at=workflow.now()
        ),
        "release this visit's hold on the insurance card",
        SANCTION,
    )
    v.sanctions = lock_released(v.sanctions, card_locked=lock.locked, by_operator=by_operator)
