"""VisitWorkflow: one outpatient visit, from registration to the last fen.

Clinical events arrive as the `record_event` update: the validator refuses an event the
visit's stage does not allow (before it enters history), the handler books charges through
an activity. After discharge the payment wait follows `PaymentPolicy.decide`: due ->
arrears at the end of the visit day -> dunning -> default (card lock, credit report) ->
settled on payment, undoing the lock and the report. Only sequencing lives here.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.money import format_fen, yuan
    from domain.policy import Action, PaymentPolicy, PaymentState, PaymentStatus
    from domain.visit import Category, Event, EventType, Item, Refusal, Stage, VisitState, apply
    from workflows import contracts as c
    from workflows.refund import start_refunds

# patch ids: visits that began waiting before refunds existed keep their old shape
REFUND_CREDIT_PATCH, REFUND_WINDOW_PATCH, RECEIPT_PATCH = "refund-credit", "refund-window", "receipt"

VISIT_STAGE = SearchAttributeKey.for_keyword("VisitStage")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PATIENT_ID = SearchAttributeKey.for_keyword("PatientId")
SEARCH_ATTRIBUTES = (VISIT_STAGE, PAYMENT_STATUS, PATIENT_ID)

# Side effects are idempotent on the other side, so they retry until they succeed.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60), non_retryable_error_types=["invalid_input"])
TIMEOUT = timedelta(seconds=30)
# A text that cannot be delivered must not hold up the visit.
SMS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                        maximum_interval=timedelta(minutes=5), maximum_attempts=8,
                        non_retryable_error_types=["invalid_input", "sms_rejected"])


def to_domain_event(inp: c.RecordEventInput) -> Event:
    try:
        return Event(
            type=EventType(inp.type),
            items=tuple(Item(item_id=i.item_id, code=i.code, name=i.name, category=Category(i.category),
                             unit_price_fen=i.unit_price_fen, quantity=i.quantity) for i in inp.items),
            item_ids=tuple(inp.item_ids),
            skin_test_required=inp.skin_test_required,
            skin_test_positive=None if inp.result is None else inp.result == "positive",
        )
    except ValueError as err:
        raise ApplicationError(str(err), type="invalid_request", non_retryable=True) from None


def refusal_error(refusal: Refusal) -> ApplicationError:
    return ApplicationError(
        refusal.detail,
        {"stage": str(refusal.stage), "allowed": [str(e) for e in refusal.allowed]},
        type=str(refusal.code),
        non_retryable=True,
    )


@workflow.defn
class VisitWorkflow:
    @workflow.init
    def __init__(self, inp: c.VisitInput) -> None:
        self._input = inp
        self._visit = VisitState()
        self._seen: set[str] = set()
        self._lock = asyncio.Lock()
        self._balance = 0
        self._discharged_at: datetime | None = None
        self._status = PaymentStatus.open
        self._in_arrears = False
        self._defaulted = False
        self._card_locked = False
        self._credit_reported = False
        self._last_dunning_at: datetime | None = None
        self._dunning_sent = 0
        self._reported_fen = 0
        self._notice_sent_at: datetime | None = None
        self._wake = False  # a payment or a change of the bill arrived: look at the balance again
        self._refunded_fen = 0
        self._refunds_until: datetime | None = None
        self._receipt = ""

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: c.VisitInput) -> c.VisitStateResult:
        workflow.upsert_search_attributes([
            PATIENT_ID.value_set(inp.patient_id),
            VISIT_STAGE.value_set(str(self._visit.stage)),
            PAYMENT_STATUS.value_set(str(self._status)),
        ])
        bill = await workflow.execute_activity(
            c.BOOK_REGISTRATION,
            c.BookRegistrationInput(visit_id=inp.visit_id, patient_id=inp.patient_id,
                                    registration_fee_fen=inp.registration_fee_fen),
            result_type=c.BalanceResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary=f"book registration fee {format_fen(inp.registration_fee_fen)}",
        )
        self._balance = bill.balance_fen
        self._describe()

        await workflow.wait_condition(lambda: self._discharged_at is not None)
        await self._payment_phase(inp.policy)
        if inp.policy.refund_window_seconds > 0 and workflow.patched(REFUND_WINDOW_PATCH):
            await self._refund_window(inp.policy)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _payment_phase(self, policy: PaymentPolicy) -> None:
        assert self._discharged_at is not None
        # Visits that entered the payment wait before the pre-default notice existed keep
        # the old rule (sanction without a notice); all others give notice first.
        gives_notice = workflow.patched("pre-default-notice")
        deadlines = policy.deadlines(self._discharged_at)
        await self._refresh_balance()
        if self._balance > 0:
            await self._set_status(PaymentStatus.due, "discharged with a balance")
            await self._sms("bill_ready", {"amount": yuan(self._balance),
                                           "deadline": policy.local_label(deadlines.default_at)})
        while True:
            if self._wake:
                await self._refresh_balance()
            if self._balance < 0 and workflow.patched(REFUND_CREDIT_PATCH):
                await self._return_credit("cancellation")
            state = PaymentState(discharged_at=self._discharged_at, balance_fen=self._balance,
                                 in_arrears=self._in_arrears, defaulted=self._defaulted,
                                 last_dunning_at=self._last_dunning_at,
                                 notice_sent=self._notice_sent_at is not None or not gives_notice)
            decision = policy.decide(state, workflow.now())
            if decision.action is Action.settle:
                await self._settle()
                return
            if decision.action is Action.enter_arrears:
                self._in_arrears = True
                await self._set_status(PaymentStatus.arrears, "unpaid at the end of the visit day")
            elif decision.action is Action.send_dunning:
                self._dunning_sent += 1
                self._last_dunning_at = workflow.now()
                await self._sms("arrears" if decision.first_dunning else "dunning",
                                {"amount": yuan(self._balance),
                                 "deadline": policy.local_label(deadlines.default_at)},
                                step=f"dunning-{self._dunning_sent}")
            elif decision.action is Action.send_notice:
                # sent to the phone and the in-app inbox; a number the gateway refuses still
                # has the notice in the inbox, so the deadline holds
                await self._sms("pre_default", {"amount": yuan(self._balance),
                                                "deadline": policy.local_label(deadlines.default_at)})
                self._notice_sent_at = workflow.now()
                self._describe()
            elif decision.action is Action.default:
                await self._default()
            else:
                assert decision.until is not None
                wait = max(decision.until - workflow.now(), timedelta(0))
                try:
                    await workflow.wait_condition(lambda: self._wake, timeout=wait,
                                                  timeout_summary=f"payment wait until {decision.until.isoformat()}")
                except asyncio.TimeoutError:
                    pass

    async def _default(self) -> None:
        # The payment may have landed without its signal reaching us: ask the ledger first.
        await self._refresh_balance()
        if self._balance <= 0:
            return
        reason = f"visit {self._input.visit_id} unpaid past the deadline"
        lock = await workflow.execute_activity(
            c.LOCK_CARD,
            c.CardLockInput(patient_id=self._input.patient_id, visit_id=self._input.visit_id,
                            reason=reason, at=workflow.now()),
            result_type=c.CardLockResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary="lock the insurance card",
        )
        self._card_locked = lock.locked
        await workflow.execute_activity(
            c.REPORT_CREDIT,
            c.ReportCreditInput(kind="report", patient_id=self._input.patient_id, visit_id=self._input.visit_id,
                                amount_fen=self._balance, at=workflow.now()),
            result_type=c.ReportCreditResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary=f"report default of {format_fen(self._balance)}",
        )
        self._credit_reported = True
        self._reported_fen = self._balance
        self._defaulted = True
        await self._set_status(PaymentStatus.defaulted, reason)
        await self._sms("card_locked", {"amount": yuan(self._balance)})

    async def _settle(self) -> None:
        undo = self._defaulted
        if self._card_locked or self._defaulted:
            lock = await workflow.execute_activity(
                c.UNLOCK_CARD,
                c.CardLockInput(patient_id=self._input.patient_id, visit_id=self._input.visit_id,
                                reason=f"visit {self._input.visit_id} paid", at=workflow.now()),
                result_type=c.CardLockResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                summary="release this visit's hold on the insurance card",
            )
            self._card_locked = lock.locked
        if self._credit_reported:
            await workflow.execute_activity(
                c.REPORT_CREDIT,
                c.ReportCreditInput(kind="correction", patient_id=self._input.patient_id,
                                    visit_id=self._input.visit_id, amount_fen=self._reported_fen,
                                    at=workflow.now()),
                result_type=c.ReportCreditResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                summary="tell the credit platform the debt is settled",
            )
            self._credit_reported = False
        await self._set_status(PaymentStatus.settled, "balance paid")
        await self._issue_receipt()
        bill = await self._bill()
        if bill.total_fen > 0:
            await self._sms("payment_received_unlocked" if undo else "payment_received",
                            {"amount": yuan(bill.total_fen)})

    async def _return_credit(self, reason: str) -> None:
        """The ledger shows a credit (an order cancelled after payment, 退费): send it back
        to the payments that made it, each refund in its own workflow."""
        result = await workflow.execute_activity(
            c.REFUND_CREDIT,
            c.RefundCreditInput(visit_id=self._input.visit_id, patient_id=self._input.patient_id, reason=reason),
            result_type=c.RefundCreditResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary=f"refund the credit of {format_fen(-self._balance)}")
        await start_refunds(result.refunds)
        self._refunded_fen += sum(r.amount_fen for r in result.refunds)
        await self._refresh_balance()

    async def _issue_receipt(self) -> None:
        if not workflow.patched(RECEIPT_PATCH):
            return
        receipt = await workflow.execute_activity(
            c.ISSUE_RECEIPT, c.IssueReceiptInput(visit_id=self._input.visit_id), result_type=c.IssueReceiptResult,
            start_to_close_timeout=TIMEOUT, retry_policy=RETRY, summary="issue the electronic receipt (电子票据)")
        if receipt.receipt_id:
            self._receipt = f"{receipt.receipt_id} v{receipt.version}"
            self._describe()

    async def _refund_window(self, policy: PaymentPolicy) -> None:
        """Settled, the visit stays open a while: a cancellation now (退费) is refunded."""
        self._refunds_until = workflow.now() + timedelta(seconds=policy.refund_window_seconds)
        self._describe()
        while (left := self._refunds_until - workflow.now()) > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._wake, timeout=left,
                                              timeout_summary="refund window closes")
            except asyncio.TimeoutError:
                break
            await self._refresh_balance()
            if self._balance < 0:
                await self._return_credit("cancellation")
                await self._issue_receipt()  # the old one is voided (红冲), the new one shows the refund
        self._refunds_until = None
        self._describe()

    # --- clinical events ----------------------------------------------------------------

    @workflow.update
    async def record_event(self, inp: c.RecordEventInput) -> c.VisitStateResult:
        async with self._lock:
            if inp.event_id in self._seen:
                return self._view()
            # validated again under the lock: an earlier event may have moved the visit on
            result = apply(self._visit, to_domain_event(inp))
            if isinstance(result, Refusal):
                raise refusal_error(result)
            charge = [i for i in inp.items if i.item_id in {x.item_id for x in result.charge}]
            bill = await workflow.execute_activity(
                c.APPLY_VISIT_EVENT,
                c.ApplyVisitEventInput(visit_id=self._input.visit_id, patient_id=self._input.patient_id,
                                       event=inp, stage_after=str(result.state.stage), charge=charge,
                                       reverse=list(result.reverse)),
                result_type=c.BalanceResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                summary=f"{inp.type} ({inp.event_id})",
            )
            self._seen.add(inp.event_id)
            self._visit = result.state
            self._balance = bill.balance_fen
            if result.state.stage is Stage.discharged and self._discharged_at is None:
                # the HIS's time, but never before registration nor in the future
                start = workflow.info().start_time
                self._discharged_at = min(max(inp.occurred_at, start), workflow.now())
            elif self._discharged_at is not None:
                self._wake = True
            workflow.upsert_search_attributes([VISIT_STAGE.value_set(str(self._visit.stage))])
            self._describe()
            return self._view()

    @record_event.validator
    def _validate_event(self, inp: c.RecordEventInput) -> None:
        if inp.event_id in self._seen:
            return
        result = apply(self._visit, to_domain_event(inp))
        if isinstance(result, Refusal):
            raise refusal_error(result)

    # --- payments -----------------------------------------------------------------------

    @workflow.signal
    def payment_received(self, inp: c.PaymentReceivedInput) -> None:
        self._wake = True

    @workflow.query
    def state(self) -> c.VisitStateResult:
        return self._view()

    # --- helpers ------------------------------------------------------------------------

    async def _bill(self) -> c.BalanceResult:
        return await workflow.execute_activity(
            c.GET_BALANCE, c.BalanceInput(visit_id=self._input.visit_id),
            result_type=c.BalanceResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary="read the balance from the ledger",
        )

    async def _refresh_balance(self) -> None:
        self._wake = False
        self._balance = (await self._bill()).balance_fen
        self._describe()

    async def _set_status(self, status: PaymentStatus, reason: str) -> None:
        assert self._discharged_at is not None
        self._status = status
        deadlines = self._input.policy.deadlines(self._discharged_at)
        await workflow.execute_activity(
            c.RECORD_PAYMENT_STATUS,
            c.RecordPaymentStatusInput(visit_id=self._input.visit_id, patient_id=self._input.patient_id,
                                       status=str(status), at=workflow.now(), reason=reason,
                                       arrears_at=deadlines.arrears_at, due_at=deadlines.default_at,
                                       card_locked=self._card_locked, credit_reported=self._credit_reported),
            start_to_close_timeout=TIMEOUT, retry_policy=RETRY, summary=f"payment status -> {status}",
        )
        workflow.upsert_search_attributes([PAYMENT_STATUS.value_set(str(status))])
        self._describe()

    async def _sms(self, template: str, params: dict[str, str], *, step: str | None = None) -> None:
        key = f"{workflow.info().workflow_id}:sms:{step or template}"
        try:
            await workflow.execute_activity(
                c.SEND_SMS,
                c.SendSmsInput(idempotency_key=key, patient_id=self._input.patient_id,
                               visit_id=self._input.visit_id, template=template, params=params,
                               at=workflow.now()),
                start_to_close_timeout=TIMEOUT, retry_policy=SMS_RETRY, summary=f"SMS {template}",
            )
        except ActivityError:
            workflow.logger.warning("SMS %s could not be sent; the visit goes on", template)

    def _view(self) -> c.VisitStateResult:
        deadlines = None
        if self._discharged_at is not None:
            deadlines = self._input.policy.deadlines(self._discharged_at)
        return c.VisitStateResult(
            visit_id=self._input.visit_id,
            stage=str(self._visit.stage), payment_status=str(self._status), balance_fen=self._balance,
            arrears_at=deadlines.arrears_at if deadlines else None,
            due_at=deadlines.default_at if deadlines else None,
            card_locked=self._card_locked, credit_reported=self._credit_reported,
            dunning_sent=self._dunning_sent, notice_sent_at=self._notice_sent_at,
        )

    def _describe(self) -> None:
        """What an operator sees in Temporal UI's 'current details'."""
        lines = [f"**Stage:** {self._visit.stage}", f"**Payment:** {self._status}",
                 f"**Balance:** {format_fen(self._balance)}"]
        if self._discharged_at is not None:
            d = self._input.policy.deadlines(self._discharged_at)
            lines.append(f"**Arrears from:** {d.arrears_at.isoformat()}")
            lines.append(f"**Deadline:** {d.default_at.isoformat()}")
        if self._notice_sent_at is not None:
            lines.append(f"**Pre-default notice sent:** {self._notice_sent_at.isoformat()}")
        if self._card_locked:
            lines.append("**Insurance card:** locked")
        if self._credit_reported:
            lines.append("**Credit platform:** default reported")
        if self._dunning_sent:
            lines.append(f"**Reminders sent:** {self._dunning_sent}")
        if self._refunded_fen:
            lines.append(f"**Refunds asked for:** {format_fen(self._refunded_fen)}")
        if self._receipt:
            lines.append(f"**Receipt (电子票据):** {self._receipt}")
        if self._refunds_until is not None:
            lines.append(f"**Open for cancellations (退费) until:** {self._refunds_until.isoformat()}")
        workflow.set_current_details("\n\n".join(lines))
