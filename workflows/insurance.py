"""InsurancePaymentWorkflow (`insurance-pay-{settlement_id}`): 医保脱卡支付 as a saga.

The bureau has pre-settled the bill into pooled fund, personal account and self-pay. This
settles the insurance part, then waits for the patient's self-pay part at a channel. If the
self-pay lands, the insurance part is booked in the ledger and the visits are told; if it
does not land in time, the self-pay order is closed at the channel and, unless the channel
says it was paid after all, the insurance settlement is reversed (冲正), so the insurance
never pays for a bill the patient left half-paid."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.insurance import SettlementStatus
    from domain.money import format_fen
    from domain.payment import PAID
    from workflows import activities as a, contracts as c
    from workflows.reconcile import tell_visits
    from workflows.refund import start_refunds
    from workflows.retries import CHANNEL_CALL, LEDGER_WRITE, Retries
    from workflows.steps import until_done

I = TypeVar("I")  # noqa: E741 (an activity's input, beside T its result)
T = TypeVar("T")


@workflow.defn
class InsurancePaymentWorkflow:
    def __init__(self) -> None:
        self._status = SettlementStatus.presettled
        self._self_paid = False
        self._lines: list[str] = []
        self._alert = ""  # a call to the bureau or the channel that keeps failing

    @workflow.run
    async def run(self, inp: c.InsurancePaymentInput) -> c.SettlementResult:
        self._describe(inp)
        settlement = c.SettlementInput(settlement_id=inp.settlement_id)
        settled = await self._step(
            a.settle_insurance,
            settlement,
            f"settle the insurance part {format_fen(inp.insurance_fen)} with the bureau",
            CHANNEL_CALL,
        )
        self._set_status(inp, settled)
        if settled.status != SettlementStatus.insurance_settled:
            if inp.self_pay_payment_id:
                # the bureau refused: the self-pay order is no longer wanted (paid already: it
                # lands as an ordinary payment of the bill)
                await self._close_self_pay(inp)
            return settled
        late = inp.self_pay_fen > 0 and not await self._self_pay_in_time(inp)
        if late and (reversed_ := await self._reverse_unless_paid(inp, settlement)) is not None:
            return self._set_status(inp, reversed_)
        booked = await self._step(a.book_insurance, settlement, "book the insurance part in the ledger", LEDGER_WRITE)
        await tell_visits(inp.settlement_id, booked.landed)
        await start_refunds(booked.refunds)
        return self._set_status(inp, booked)

    @workflow.signal
    def self_pay_received(self) -> None:
        self._self_paid = True

    @workflow.query
    def status(self) -> str:
        return str(self._status)

    async def _self_pay_in_time(self, inp: c.InsurancePaymentInput) -> bool:
        try:
            await workflow.wait_condition(
                lambda: self._self_paid,
                timeout=timedelta(seconds=inp.self_pay_timeout_seconds),
                timeout_summary="self-pay deadline",
            )
        except TimeoutError:
            return False
        return True

    async def _reverse_unless_paid(
        self, inp: c.InsurancePaymentInput, settlement: c.SettlementInput
    ) -> c.SettlementResult | None:
        """The self-pay part did not come in time, but its notification may be lost: close the
        order (so it cannot be paid after the 冲正) and let the channel's answer decide. Paid
        after all: None; unpaid: the insurance settlement reversed."""
        if (await self._close_self_pay(inp)).status in PAID:
            return None
        return await self._step(a.reverse_insurance, settlement, "冲正: reverse the insurance settlement", CHANNEL_CALL)

    async def _close_self_pay(self, inp: c.InsurancePaymentInput) -> c.ReconcilePaymentResult:
        """Close the self-pay order at its channel; money that landed after all goes to the
        visits, and what it paid beyond the bills back to the patient."""
        asked = await self._step(
            a.close_payment,
            c.ReconcilePaymentInput(payment_id=inp.self_pay_payment_id),
            "close the self-pay order",
            CHANNEL_CALL,
        )
        await tell_visits(inp.self_pay_payment_id, asked.landed)
        await start_refunds(asked.refunds)
        return asked

    def _set_status(self, inp: c.InsurancePaymentInput, result: c.SettlementResult) -> c.SettlementResult:
        self._status = SettlementStatus(result.status)
        self._describe(inp)
        return result

    async def _step(self, activity: Callable[[I], Awaitable[T]], arg: I, summary: str, retries: Retries) -> T:
        return await until_done(activity, arg, retries=retries, summary=summary, alert=self._raise_alert)

    def _raise_alert(self, text: str) -> None:
        self._alert = text
        self._show()

    def _describe(self, inp: c.InsurancePaymentInput) -> None:
        self._lines = [
            f"**Settlement:** {inp.settlement_id}",
            f"**Status:** {self._status}",
            f"**Insurance part:** {format_fen(inp.insurance_fen)}",
            f"**Self-pay part:** {format_fen(inp.self_pay_fen)}",
        ]
        self._show()

    def _show(self) -> None:
        alert = [f"**⚠ Alert:** {self._alert}"] if self._alert else []
        workflow.set_current_details("\n\n".join(alert + self._lines))
