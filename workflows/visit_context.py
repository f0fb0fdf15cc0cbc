"""What one visit's workflow knows, and the steps every phase of it takes: read the bill,
record the payment status, text the patient, show the visit in Temporal UI.

VisitWorkflow (workflows/visit.py) holds one VisitContext; the payment phase
(workflows/payment.py) and the sanctions (workflows/sanctions.py) act on it. Deterministic:
time is `workflow.now()`, every I/O an activity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, SearchAttributeUpdate, TypedSearchAttributes
from temporalio.exceptions import ActivityError

from domain.money import balance_band, format_fen
from domain.oversight import PendingApproval, Standing
from domain.policy import Deadlines, PaymentState, PaymentStatus
from domain.sanctions import HoldKind, Sanctions
from domain.visit import VisitState
from workflows import activities as a, contracts as c
from workflows.retries import LEDGER_WRITE, PATIENT_MESSAGE, Retries
from workflows.steps import call, until_done

I = TypeVar("I")  # noqa: E741 (an activity's input, beside T its result)
T = TypeVar("T")

VISIT_STAGE = SearchAttributeKey.for_keyword("VisitStage")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
# indexed by Temporal in clear (no codec reaches them): a keyed pseudonym, not the patient's id,
# and a band, not the amount
PATIENT_TAG = SearchAttributeKey.for_keyword("PatientTag")
BALANCE_BAND = SearchAttributeKey.for_keyword("BalanceBand")
DUE_AT = SearchAttributeKey.for_datetime("DueAt")
DEPARTMENT = SearchAttributeKey.for_keyword("Department")
HOLD = SearchAttributeKey.for_keyword("Hold")  # none | dispute | operator
DISPUTED = SearchAttributeKey.for_bool("Disputed")
SEARCH_ATTRIBUTES = (VISIT_STAGE, PAYMENT_STATUS, PATIENT_TAG, BALANCE_BAND, DUE_AT, DEPARTMENT, HOLD, DISPUTED)


def utc(at: datetime | None) -> datetime | None:
    """A time as the database gives it back: in UTC."""
    return None if at is None else at.astimezone(UTC)


class VisitContext:
    def __init__(self, inp: c.VisitInput) -> None:
        self.input = inp
        # one change at a time: a clinical event, an operator's action, a step of the payment loop
        self.lock = asyncio.Lock()
        self.visit_id, self.patient_id, self.policy = inp.visit_id, inp.patient_id, inp.policy
        self.visit = VisitState()  # the clinical stage and items (domain.visit)
        self.bill = c.BalanceResult(total_fen=0, paid_fen=0, balance_fen=0)  # as last read from the ledger
        self.registered = False  # the registration fee is booked
        self.discharged_at: datetime | None = None  # when the payment clock started
        self.his_discharged_at: datetime | None = None  # the HIS's time of the discharge, as recorded
        self.status = PaymentStatus.open
        self.recorded: c.RecordPaymentStatusInput | None = None  # the status the database holds
        self.wake = False  # a payment, a change of the bill or an action arrived: look again
        self.auto_discharged = False  # the HIS never discharged the visit; the workflow did
        # figure 4: arrears, reminders, the pre-default notice, the sanctions and their holds
        self.in_arrears = False
        self.last_dunning_at: datetime | None = None
        self.dunning_sent = 0
        self.notice_sent_at: datetime | None = None
        self.sanctions = Sanctions()
        # people's control (issue 10)
        self.dispute_id: str | None = None  # the open dispute
        self.pending: PendingApproval | None = None  # a write-off waiting for the second operator
        self.shown: dict[str, object] = {}  # search attributes as last upserted
        # after settlement
        self.refunded_fen = 0
        self.refunds_until: datetime | None = None
        self.receipt = ""
        self.alert = ""  # a background step that keeps failing

    @property
    def balance(self) -> int:
        return self.bill.balance_fen

    @property
    def closed(self) -> bool:
        """Nothing is left to collect: settled or written off."""
        return self.status in (PaymentStatus.settled, PaymentStatus.written_off)

    # --- the visit's lock ----------------------------------------------------------------

    async def acquire(self, within: timedelta) -> bool:
        """Take the lock, waiting at most `within` (a handler answers; it never waits forever)."""
        try:
            await asyncio.wait_for(self.lock.acquire(), within.total_seconds())
        except TimeoutError:
            return False
        return True

    @asynccontextmanager
    async def unlocked(self) -> AsyncIterator[None]:
        """Let go of the lock while a slow third party answers (the bureau, the credit
        platform): an action may land meanwhile, and the step looks again after."""
        self.lock.release()
        try:
            yield
        finally:
            await self.lock.acquire()

    # --- steps ---------------------------------------------------------------------------

    async def step(
        self,
        activity: Callable[[I], Awaitable[T]],
        arg: I,
        summary: str,
        retries: Retries = LEDGER_WRITE,
        *,
        local: bool = False,
    ) -> T:
        """A background step: tried until it succeeds, with an alert while it keeps failing
        (`local`: a local activity, see workflows.steps.call)."""
        return await until_done(activity, arg, retries=retries, summary=summary, alert=self.raise_alert, local=local)

    def raise_alert(self, text: str) -> None:
        self.alert = text
        self.describe()

    async def read_bill(self) -> c.BalanceResult:
        self.bill = await self.step(
            a.get_balance, c.BalanceInput(visit_id=self.visit_id), "read the balance from the ledger", local=True
        )
        self.describe()
        return self.bill

    async def refresh_balance(self) -> None:
        """Read the bill again for what woke the visit (a payment, a changed bill)."""
        self.wake = False
        await self.read_bill()

    def snapshot(self, reason: str) -> c.RecordPaymentStatusInput:
        """The visit's columns as the workflow holds them now: status, deadlines, sanctions, hold."""
        deadlines = self.deadlines()
        hold = self.sanctions.hold()
        return c.RecordPaymentStatusInput(
            visit_id=self.visit_id,
            patient_id=self.patient_id,
            status=str(self.status),
            at=workflow.now(),
            reason=reason,
            arrears_at=deadlines.arrears_at if deadlines else None,
            due_at=deadlines.default_at if deadlines else None,
            card_locked=self.sanctions.card_locked,
            credit_reported=self.sanctions.credit_reported,
            hold_kind=str(hold.kind) if hold else None,
            hold_reason=hold.reason if hold else None,
            hold_since=hold.since if hold else None,
            hold_until=hold.until if hold else None,
        )

    async def set_status(self, status: PaymentStatus, reason: str) -> None:
        """Record the payment status, deadlines, sanctions and hold where the API reads them."""
        self.status = status
        recorded = self.snapshot(reason)
        await self.step(a.record_payment_status, recorded, f"payment status -> {status}", local=True)
        self.recorded = recorded
        self.describe()

    def wanted(self) -> dict[SearchAttributeKey[Any], Any]:
        """The search attributes operators filter on, as the visit stands now (None: unset)."""
        r, hold = self.recorded, self.sanctions.hold()
        values: dict[SearchAttributeKey[Any], Any] = {
            VISIT_STAGE: str(self.visit.stage),
            PAYMENT_STATUS: str(self.status),
            BALANCE_BAND: balance_band(self.balance),
            HOLD: str(hold.kind) if hold else "none",
            DISPUTED: self.dispute_id is not None,
            DUE_AT: r.due_at if r else None,
        }
        if self.input.department:
            values[DEPARTMENT] = self.input.department
        if self.input.patient_tag:
            values[PATIENT_TAG] = self.input.patient_tag
        return values

    def seen_at_start(self) -> None:
        """What the run started with (set by whoever started it, or carried over a
        continue-as-new) counts as shown: no upsert repeats it."""
        present = workflow.info().typed_search_attributes
        for key in SEARCH_ATTRIBUTES:
            if (value := present.get(key)) is not None:
                self.shown[key.name] = value

    def show(self) -> None:
        """Upsert the search attributes that changed since last shown (one command, none when
        nothing changed: each upsert is work for Temporal's history and its index)."""
        updates: list[SearchAttributeUpdate[Any]] = []
        for key, value in self.wanted().items():
            if self.shown.get(key.name) != value:
                self.shown[key.name] = value
                updates.append(key.value_unset() if value is None else key.value_set(value))
        if updates:
            workflow.upsert_search_attributes(updates)

    async def sms(self, template: str, params: dict[str, str], *, step: str | None = None) -> None:
        """Text the patient; a text that cannot be delivered does not hold up the visit."""
        key = f"{workflow.info().workflow_id}:sms:{step or template}"
        text = c.SendSmsInput(
            idempotency_key=key,
            patient_id=self.patient_id,
            visit_id=self.visit_id,
            template=template,
            params=params,
            at=workflow.now(),
        )
        try:
            await call(a.send_sms, text, retries=PATIENT_MESSAGE, summary=f"SMS {template}")
        except ActivityError:
            workflow.logger.warning("SMS %s could not be sent; the visit goes on", template)

    # --- what the visit shows ------------------------------------------------------------

    def deadlines(self) -> Deadlines | None:
        """The deadlines as moved so far by holds that ended and extensions."""
        if self.discharged_at is None:
            return None
        return self.policy.deadlines(self.discharged_at, self.sanctions.moved_seconds)

    def payment_state(self) -> PaymentState:
        assert self.discharged_at is not None
        s = self.sanctions
        return PaymentState(
            discharged_at=self.discharged_at,
            balance_fen=self.balance,
            in_arrears=self.in_arrears,
            defaulted=s.defaulted,
            last_dunning_at=self.last_dunning_at,
            notice_sent_at=self.notice_sent_at,
            lock_notified=s.lock_notified,
            sanctions=s,
        )

    def standing(self) -> Standing:
        """The visit as an operator action finds it (domain.oversight.check)."""
        d = self.deadlines()
        return Standing(
            status=self.status,
            balance_fen=self.balance,
            due_at=d.default_at if d else None,
            sanctions=self.sanctions,
            dispute_id=self.dispute_id,
            pending=self.pending,
        )

    def lock_at(self) -> datetime | None:
        """The earliest lock, while the visit is unpaid, not yet defaulted and not on hold."""
        deadlines = self.deadlines()
        s = self.sanctions
        if deadlines is None or s.defaulted or s.suspended or s.released or self.closed:
            return None
        return self.policy.lock_at(deadlines, self.notice_sent_at, workflow.now(), s.notice_moved_seconds)

    def view(self) -> c.VisitStateResult:
        """The `state` query: the visit as the workflow sees it now."""
        deadlines = self.deadlines()
        return c.VisitStateResult(
            visit_id=self.visit_id,
            stage=str(self.visit.stage),
            payment_status=str(self.status),
            balance_fen=self.balance,
            arrears_at=deadlines.arrears_at if deadlines else None,
            due_at=deadlines.default_at if deadlines else None,
            card_locked=self.sanctions.card_locked,
            credit_reported=self.sanctions.credit_reported,
            dunning_sent=self.dunning_sent,
            notice_sent_at=self.notice_sent_at,
            lock_at=self.lock_at(),
        )

    def record(self) -> c.VisitRecordResult:
        """The `record_event` answer: the visit as the database holds it after the event."""
        r = self.recorded
        return c.VisitRecordResult(
            visit_id=self.visit_id,
            stage=str(self.visit.stage),
            payment_status=r.status if r else str(PaymentStatus.open),
            total_fen=self.bill.total_fen,
            paid_fen=self.bill.paid_fen,
            balance_fen=self.bill.balance_fen,
            discharged_at=utc(self.his_discharged_at),
            arrears_at=utc(r.arrears_at) if r else None,
            due_at=utc(r.due_at) if r else None,
            card_locked=r.card_locked if r else False,
            credit_reported=r.credit_reported if r else False,
            hold_kind=r.hold_kind if r else None,
            hold_reason=r.hold_reason if r else None,
            hold_since=utc(r.hold_since) if r else None,
            hold_until=utc(r.hold_until) if r else None,
            waived_fen=self.bill.waived_fen,
            pending_approval_id=self.pending.approval_id if self.pending else None,
        )

    def describe(self) -> None:
        """What an operator sees in Temporal UI's 'current details'."""
        lines = [
            f"**Stage:** {self.visit.stage}",
            f"**Payment:** {self.status}",
            f"**Balance:** {format_fen(self.balance)}",
        ]
        if self.alert:
            lines.insert(0, f"**⚠ Alert:** {self.alert}")
        if (d := self.deadlines()) is not None:
            lines.append(f"**Arrears from:** {d.arrears_at.isoformat()}")
            lines.append(f"**Deadline:** {d.default_at.isoformat()}")
            if self.notice_sent_at is not None:
                lines.append(f"**Pre-default notice sent:** {self.notice_sent_at.isoformat()}")
            elif not self.sanctions.defaulted:
                lines.append(f"**Pre-default notice due:** {d.notice_at.isoformat()}")
            if (lock_at := self.lock_at()) is not None:
                lines.append(f"**Earliest card lock and credit report:** {lock_at.isoformat()}")
        lines += self.oversight_lines()
        if self.sanctions.card_locked:
            lines.append("**Insurance card:** locked")
        if self.sanctions.credit_reported:
            lines.append("**Credit platform:** default reported")
        if self.dunning_sent:
            lines.append(f"**Reminders sent:** {self.dunning_sent}")
        if self.refunded_fen:
            lines.append(f"**Refunds asked for:** {format_fen(self.refunded_fen)}")
        if self.receipt:
            lines.append(f"**Receipt (电子票据):** {self.receipt}")
        if self.refunds_until is not None:
            lines.append(f"**Open for cancellations (退费) until:** {self.refunds_until.isoformat()}")
        workflow.set_current_details("\n\n".join(lines))
        self.show()

    def oversight_lines(self) -> list[str]:
        """The hold and its reason, the deadline moved, a dispute, a write-off waiting."""
        s, lines = self.sanctions, []
        if (hold := s.hold()) is not None:
            label = "dispute (申诉)" if hold.kind is HoldKind.dispute else "paused by an operator"
            until = f" until {hold.until.isoformat()}" if hold.until else ""
            lines.append(f"**⏸ Hold:** {label} since {hold.since.isoformat()}{until}, by {hold.by}: {hold.reason}")
        if s.moved_seconds:
            lines.append(f"**Deadline moved by:** {s.moved}")
        if self.dispute_id:
            lines.append(f"**Open dispute:** {self.dispute_id}")
        if self.pending is not None:
            p = self.pending
            lines.append(f"**Write-off waiting for a second operator:** {p.approval_id} (asked by {p.requested_by})")
        if self.auto_discharged:
            lines.append("**Discharged by the workflow:** the HIS never sent a discharge")
        if self.bill.waived_fen:
            lines.append(f"**Waived (减免):** {format_fen(self.bill.waived_fen)}")
        return lines


def initial_search_attributes(inp: c.VisitInput) -> TypedSearchAttributes:
    """What a new visit shows in Temporal's index, given when it is started (in the start
    event: no upsert): `VisitContext.wanted()` of a visit that has just begun."""
    wanted = VisitContext(inp).wanted()
    return TypedSearchAttributes(
        [SearchAttributePair(key, value) for key, value in wanted.items() if value is not None]
    )
