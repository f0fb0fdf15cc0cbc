"""MobileInsurancePaymentWorkflow (`insurance-mobile-{settlement_id}`): 医保移动支付.

The bureau's order was paid (6202): the fund and the personal account paid their parts, and the
cash part is awaited at the platform's cashier. This asks the bureau where the order stands
(6301) at once, again each time the platform notifies us (`order_updated`), and at the deadline.
Paid: its three parts are booked (only as 6301 says), the visits told, money beyond the bills
sent back. Unpaid at the deadline: the order is taken back (6401), unless the bureau says it was
paid meanwhile, then it is booked all the same."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.insurance import SettlementStatus
    from domain.money import format_fen
    from workflows import activities as a, contracts as c, contracts_mobile as m
    from workflows.reconcile import tell_visits
    from workflows.refund import start_refunds
    from workflows.retries import CHANNEL_CALL, Retries
    from workflows.steps import until_done

I = TypeVar("I")  # noqa: E741 (an activity's input, beside T its result)
T = TypeVar("T")


@workflow.defn
class MobileInsurancePaymentWorkflow:
    def __init__(self) -> None:
        self._status = SettlementStatus.paying
        self._updated = False
        self._lines: list[str] = []
        self._alert = ""  # a call to the bureau that keeps failing, or a 6301 that does not match

    @workflow.run
    async def run(self, inp: m.MobilePaymentInput) -> c.SettlementResult:
        self._describe(inp)
        order = c.SettlementInput(settlement_id=inp.settlement_id)
        deadline = workflow.now() + timedelta(seconds=inp.timeout_seconds)
        result = await self._ask(a.settle_mobile_order, order, "ask the bureau about the order (6301)")
        while result.status == SettlementStatus.paying:
            self._set_status(inp, result)
            if await self._told_before(deadline):
                result = await self._ask(a.settle_mobile_order, order, "ask the bureau about the order (6301)")
            else:
                result = await self._ask(a.revoke_mobile_order, order, "take the unpaid order back (6401)")
        self._set_status(inp, result)
        await tell_visits(inp.settlement_id, result.landed)
        await start_refunds(result.refunds)
        return result

    @workflow.signal(name=m.ORDER_UPDATED)
    def order_updated(self) -> None:
        """The platform notified us about the order: ask the bureau now."""
        self._updated = True

    @workflow.query
    def status(self) -> str:
        return str(self._status)

    @workflow.query
    def alert(self) -> str:
        return self._alert

    async def _ask(
        self,
        activity: Callable[[c.SettlementInput], Awaitable[c.SettlementResult]],
        order: c.SettlementInput,
        summary: str,
    ) -> c.SettlementResult:
        """The step; a 6301 that says paid with other figures than the ordered split, or an ordStas
        neither paid nor unpaid (nothing was booked; the activity put the visits on an operator's
        hold, so no sanction follows) raises the alert at once and holds until the order is told
        updated again (the platform's notification, or a person's signal once it is sorted out),
        then asks again."""
        while True:
            try:
                return await self._step(activity, order, summary)
            except ActivityError as err:
                if not (isinstance(err.cause, ApplicationError) and err.cause.type == m.SPLIT_MISMATCH):
                    raise
                self._raise_alert(
                    f"{err.cause.message}: for a person to sort out; signal {m.ORDER_UPDATED} to ask again"
                )
            await workflow.wait_condition(lambda: self._updated)
            self._updated = False
            self._raise_alert("")

    async def _told_before(self, deadline: datetime) -> bool:
        """Wait for a notification until `deadline`: True when one came, False at the deadline."""
        left = deadline - workflow.now()
        if not self._updated and left > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._updated, timeout=left, timeout_summary="cash-part deadline")
            except TimeoutError:
                pass
        told, self._updated = self._updated, False
        return told

    def _set_status(self, inp: m.MobilePaymentInput, result: c.SettlementResult) -> None:
        self._status = SettlementStatus(result.status)
        self._describe(inp, result.detail)

    async def _step(
        self, activity: Callable[[I], Awaitable[T]], arg: I, summary: str, retries: Retries = CHANNEL_CALL
    ) -> T:
        return await until_done(activity, arg, retries=retries, summary=summary, alert=self._raise_alert)

    def _raise_alert(self, text: str) -> None:
        self._alert = text
        self._show()

    def _describe(self, inp: m.MobilePaymentInput, detail: str = "") -> None:
        self._lines = [
            f"**Settlement:** {inp.settlement_id}",
            f"**Status:** {self._status}",
            f"**Pooled fund:** {format_fen(inp.fund_fen)}",
            f"**Personal account:** {format_fen(inp.personal_fen)}",
            f"**Cash part:** {format_fen(inp.cash_fen)}",
        ] + ([f"**Detail:** {detail}"] if detail else [])
        self._show()

    def _show(self) -> None:
        alert = [f"**⚠ Alert:** {self._alert}"] if self._alert else []
        workflow.set_current_details("\n\n".join(alert + self._lines))
