"""VisitWorkflow (`visit-{visit_id}`): one outpatient visit, from registration to the last fen.

The patent's figure 1 is the run: registration books the fee; the clinical events (check-in,
consultation, exams and results, prescription and skin test, pharmacy, infusion) arrive as the
`record_event` update, each booking its charges to the visit, nothing paid on the way; at
discharge the payment phase begins. That is figure 4 (workflows/payment.py): due, arrears
with daily reminders, and past the deadline the sanctions (workflows/sanctions.py), all undone
on payment. Only sequencing lives here; the rules are domain/visit.py and domain/policy.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.money import format_fen
    from domain.policy import PaymentStatus
    from domain.visit import Category, Event, EventType, Item, Refusal, Stage, apply
    from workflows import activities as a, contracts as c
    from workflows.lifetime import await_discharge, continue_as_new, restore
    from workflows.oversight import act_on, unavailable as ledger_unavailable, validate
    from workflows.payment import collect, keep_open_for_refunds
    from workflows.retries import CLINICAL_EVENT, INVALID_INPUT
    from workflows.steps import call
    from workflows.visit_context import SEARCH_ATTRIBUTES, VisitContext, initial_search_attributes

__all__ = ["SEARCH_ATTRIBUTES", "VisitWorkflow", "initial_search_attributes"]


@workflow.defn
class VisitWorkflow:
    @workflow.init
    def __init__(self, inp: c.VisitInput) -> None:
        self._v = VisitContext(inp)
        self._seen: set[str] = set()  # event ids recorded
        if inp.carried is not None:  # a run after a continue-as-new: the visit goes on as it was
            self._seen = restore(self._v, inp.carried)

    @workflow.run
    async def run(self, inp: c.VisitInput) -> c.VisitStateResult:
        v = self._v
        v.seen_at_start()
        v.describe()
        if inp.carried is None:
            # registration (挂号): the fee is the visit's first charge
            v.bill = await v.step(
                a.book_registration,
                c.BookRegistrationInput(
                    visit_id=inp.visit_id, patient_id=inp.patient_id, registration_fee_fen=inp.registration_fee_fen
                ),
                f"book registration fee {format_fen(inp.registration_fee_fen)}",
                local=True,  # the first event waits on it
            )
            v.registered = True
            v.describe()
            # the visit itself: events arrive as updates until the patient leaves (or a day passed)
            await await_discharge(v, self._seen, v.lock)
        # figure 4: paid within the visit day, in arrears, or defaulted and then paid; people
        # may pause, waive, write off or hear a dispute on the way (workflows/oversight.py)
        if not await collect(v):
            await continue_as_new(v, self._seen)
        if inp.policy.refund_window_seconds > 0 and v.status is PaymentStatus.settled:
            await keep_open_for_refunds(v)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return v.view()

    # --- clinical events ----------------------------------------------------------------

    @workflow.update
    async def record_event(self, inp: c.RecordEventInput) -> c.VisitRecordResult:
        v = self._v
        async with self._turn():
            if inp.event_id in self._seen:
                return v.record()
            await self._registration_booked()
            # validated again under the lock: an earlier event may have moved the visit on
            result = apply(v.visit, to_domain_event(inp))
            if isinstance(result, Refusal):
                raise refusal_error(result)
            charged = {x.item_id for x in result.charge}
            booking = c.ApplyVisitEventInput(
                visit_id=v.visit_id,
                patient_id=v.patient_id,
                event=inp,
                stage_after=str(result.state.stage),
                charge=[i for i in inp.items if i.item_id in charged],
                reverse=list(result.reverse),
            )
            try:  # bounded: the HIS gets an answer within seconds, and the next event is not stuck
                v.bill = await call(
                    a.apply_visit_event,
                    booking,
                    retries=CLINICAL_EVENT,
                    summary=f"{inp.type} ({inp.event_id})",
                    local=True,  # the HIS waits on it: no round trip through the server
                )
            except ActivityError as err:
                raise not_booked(err) from None
            self._seen.add(inp.event_id)
            v.visit = result.state
            if result.state.stage is Stage.discharged and v.discharged_at is None:
                v.his_discharged_at = inp.occurred_at  # as the ledger records it
                # the payment clock: the HIS's time, but never before registration nor in the future
                start = workflow.info().start_time
                v.discharged_at = min(max(inp.occurred_at, start), workflow.now())
            elif v.discharged_at is not None:
                v.wake = True
            v.describe()
        if result.state.stage is Stage.discharged:  # the lock let go: the payment loop records it
            await self._payment_status_recorded()
        return v.record()

    async def _registration_booked(self) -> None:
        """An event waits for the registration fee: the bill it answers with starts with it
        (a visit whose workflow starts with its first event books the fee at the same time)."""
        if self._v.registered:
            return
        try:
            await workflow.wait_condition(
                lambda: self._v.registered,
                timeout=CLINICAL_EVENT.schedule_to_close,
                timeout_summary="the registration fee is booked",
            )
        except TimeoutError:
            raise ledger_unavailable() from None

    async def _payment_status_recorded(self) -> None:
        """Read-your-writes: the answer to the discharge already shows what it decided (`due`, or
        `settled` when nothing is owed), never `open`. Bounded: should the ledger be slow, the
        HIS gets its answer and the status follows in the visit's reads."""
        try:
            await workflow.wait_condition(
                lambda: self._v.recorded is not None,
                timeout=CLINICAL_EVENT.schedule_to_close,
                timeout_summary="the payment status after discharge is recorded",
            )
        except TimeoutError:
            pass

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The visit's lock for a handler, waited for within CLINICAL_EVENT's deadline: a
        payment step stuck on the ledger answers `ledger_unavailable`, never a hang."""
        if not await self._v.acquire(CLINICAL_EVENT.schedule_to_close or CLINICAL_EVENT.start_to_close):
            raise ledger_unavailable()
        try:
            yield
        finally:
            self._v.lock.release()

    @record_event.validator
    def _validate_event(self, inp: c.RecordEventInput) -> None:
        if inp.event_id in self._seen:
            return
        result = apply(self._v.visit, to_domain_event(inp))
        if isinstance(result, Refusal):
            raise refusal_error(result)

    # --- people's control over the sanctions (issue 10) ---------------------------------

    @workflow.update
    async def operator_action(self, inp: c.OperatorActionInput) -> c.VisitRecordResult:
        """An operator's action or a dispute step (the API's or Temporal UI's same JSON); the
        answer is the visit as recorded after it."""
        async with self._turn():
            await act_on(self._v, inp)  # validated again under the lock, on the ledger's balance
            return self._v.record()

    @operator_action.validator
    def _validate_action(self, inp: c.OperatorActionInput) -> None:
        validate(self._v, inp)

    # --- payments -----------------------------------------------------------------------

    @workflow.signal
    def payment_received(self, inp: c.PaymentReceivedInput) -> None:
        self._v.wake = True

    @workflow.query
    def state(self) -> c.VisitStateResult:
        return self._v.view()


def to_domain_event(inp: c.RecordEventInput) -> Event:
    try:
        return Event(
            type=EventType(inp.type),
            items=tuple(
                Item(
                    item_id=i.item_id,
                    code=i.code,
                    name=i.name,
                    category=Category(i.category),
                    unit_price_fen=i.unit_price_fen,
                    quantity=i.quantity,
                )
                for i in inp.items
            ),
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


def not_booked(err: ActivityError) -> ApplicationError:
    """The update's answer when its booking failed: bad data is the HIS's to fix (422);
    anything else, a ledger that did not answer within CLINICAL_EVENT's deadline, may be sent
    again."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == INVALID_INPUT:
        return ApplicationError(cause.message, type="invalid_request", non_retryable=True)
    return ledger_unavailable()
