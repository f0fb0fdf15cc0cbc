"""RefundWorkflow (`refund-{refund_id}`): one refund, from the request to the money back.

Submits the refund to its channel, then waits for the outcome: a `refund_updated` signal
(the channel's notification, or an operator confirming a window refund) or a query after a
growing pause. Texts the patient when the money is on its way back. The ledger entry was
booked when the refund was asked for; a refusal books the reversal (in the activity)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from domain.money import format_fen, yuan
    from domain.payment import REFUND_FINAL, RefundStatus
    from workflows import activities as a, contracts as c
    from workflows.retries import CHANNEL_CALL, PATIENT_MESSAGE
    from workflows.steps import call, until_done

FIRST_PAUSE, LONGEST_PAUSE = timedelta(seconds=5), timedelta(hours=1)
WINDOW_PAUSE = timedelta(days=1)  # a window refund waits for the operator's confirmation


@workflow.defn
class RefundWorkflow:
    def __init__(self) -> None:
        self._updated = False
        self._status = RefundStatus.created
        self._lines: list[str] = []
        self._alert = ""  # a call to the channel that keeps failing

    @workflow.run
    async def run(self, inp: c.RefundInput) -> c.RefundStatusResult:
        self._describe(inp, "")
        result = await until_done(
            a.submit_refund,
            inp,
            retries=CHANNEL_CALL,
            alert=self._raise_alert,
            summary=f"ask {inp.method} to refund {format_fen(inp.amount_fen)}",
        )
        self._status = RefundStatus(result.status)
        self._describe(inp, result.detail)
        by_hand = self._status is RefundStatus.manual
        if by_hand:
            await self._sms(inp, "refund_at_window")
        pause = FIRST_PAUSE
        while self._status not in REFUND_FINAL:
            wait = WINDOW_PAUSE if self._status is RefundStatus.manual else pause
            try:
                await workflow.wait_condition(
                    lambda: self._updated, timeout=wait, timeout_summary=f"ask again in {wait}"
                )
            except TimeoutError:
                pass
            self._updated = False
            result = await until_done(
                a.check_refund,
                inp,
                retries=CHANNEL_CALL,
                alert=self._raise_alert,
                summary=f"ask {inp.method} about the refund",
            )
            self._status = RefundStatus(result.status)
            self._describe(inp, result.detail)
            pause = min(pause * 2, LONGEST_PAUSE)
        if self._status is RefundStatus.succeeded and not by_hand:
            await self._sms(inp, "refund_sent")
        return result

    @workflow.signal
    def refund_updated(self) -> None:
        """The channel notified us, or an operator confirmed: look again now."""
        self._updated = True

    @workflow.query
    def status(self) -> str:
        return str(self._status)

    async def _sms(self, inp: c.RefundInput, template: str) -> None:
        text = c.SendSmsInput(
            idempotency_key=f"{workflow.info().workflow_id}:sms:{template}",
            patient_id=inp.patient_id,
            visit_id=inp.visit_id,
            template=template,
            params={"amount": yuan(inp.amount_fen)},
            at=workflow.now(),
        )
        try:
            await call(a.send_sms, text, retries=PATIENT_MESSAGE, summary=f"SMS {template}")
        except ActivityError:
            workflow.logger.warning("SMS %s could not be sent", template)

    def _describe(self, inp: c.RefundInput, detail: str) -> None:
        lines = [
            f"**Refund:** {format_fen(inp.amount_fen)} to {inp.method}",
            f"**Status:** {self._status}",
            f"**Visit:** {inp.visit_id}",
            f"**Payment:** {inp.payment_id}",
        ]
        if detail:
            lines.append(f"**Detail:** {detail}")
        self._lines = lines
        self._show()

    def _raise_alert(self, text: str) -> None:
        self._alert = text
        self._show()

    def _show(self) -> None:
        alert = [f"**⚠ Alert:** {self._alert}"] if self._alert else []
        workflow.set_current_details("\n\n".join(alert + self._lines))


async def start_refunds(refunds: list[c.RefundInput]) -> int:
    """Start each refund's workflow as a child that outlives its parent (a visit closes while
    its refund is on the way). One already running is left alone. Returns how many started."""
    started = 0
    for refund in refunds:
        try:
            await workflow.start_child_workflow(
                RefundWorkflow.run,
                refund,
                id=c.refund_workflow_id(refund.refund_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"Refund {format_fen(refund.amount_fen)} · visit {refund.visit_id}",
            )
            started += 1
        except WorkflowAlreadyStartedError:
            pass
    return started
