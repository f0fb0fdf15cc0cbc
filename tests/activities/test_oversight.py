"""record_operator_action against a real database: what an action decided is written once (a
retry writes nothing again), the waiver through the ledger, never more than the balance, the
dispute and approval rows, the visit's hold columns, the audit entry with operator and reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from config import Settings
from db.models import AuditLog, LedgerEntry, Visit
from db.oversight import Approval, Dispute
from tests.support import add_patient, add_visit, rows, uid
from worker import activity_functions
from workflows import contracts as c, contracts_oversight as o

Factory = async_sessionmaker[AsyncSession]
AT = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)


@pytest.fixture
def acts(settings: Settings, factory: Factory, integrations):
    return {f.__name__: f for f in activity_functions(settings, factory, integrations)}


@pytest.fixture
def record(acts):
    return acts["record_operator_action"]


@pytest.fixture
def visit(acts, factory: Factory):
    async def make() -> tuple[str, str]:
        """A visit with its registration fee (500) on the bill."""
        patient_id = await add_patient(factory)
        visit_id = await add_visit(factory, patient_id, fee=500)
        booking = c.BookRegistrationInput(visit_id=visit_id, patient_id=patient_id, registration_fee_fen=500)
        await ActivityEnvironment().run(acts["book_registration"], booking)
        return patient_id, visit_id

    return make


def action(patient_id: str, visit_id: str, name: str, at: datetime = AT, **kw: object) -> o.RecordOperatorActionInput:
    return o.RecordOperatorActionInput(
        idempotency_key=f"visit-{visit_id}:action:{name}:{at.isoformat()}",
        visit_id=visit_id,
        patient_id=patient_id,
        action=name,
        operator="op-1",
        reason="checked at the window",
        at=at,
        **kw,  # type: ignore[arg-type]  # the action's own fields
    )


def status(patient_id: str, visit_id: str, **kw: object) -> c.RecordPaymentStatusInput:
    return c.RecordPaymentStatusInput(
        visit_id=visit_id,
        patient_id=patient_id,
        status="arrears",
        at=AT,
        reason="r",
        **kw,  # type: ignore[arg-type]  # columns
    )


async def test_a_waiver_is_booked_once_and_audited(record, visit, factory: Factory) -> None:
    patient_id, visit_id = await visit()
    inp = action(patient_id, visit_id, "waive", waive_fen=200, detail={"note": "hardship"})
    env = ActivityEnvironment()
    first = await env.run(record, inp)
    again = await env.run(record, inp)
    assert first == again == c.BalanceResult(total_fen=500, paid_fen=0, balance_fen=300, waived_fen=200)
    [waiver] = [e for e in await rows(factory, LedgerEntry, visit_id=visit_id) if e.kind == "waiver"]
    assert waiver.amount_fen == 200
    [entry] = [a for a in await rows(factory, AuditLog, subject_id=visit_id) if a.action == "waive"]
    assert (entry.actor, entry.reason, entry.detail["waived_fen"], entry.detail["note"]) == (
        "op-1",
        "checked at the window",
        "200",
        "hardship",
    )


async def test_a_waiver_over_the_balance_is_refused_for_good(record, visit, factory: Factory) -> None:
    patient_id, visit_id = await visit()
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(record, action(patient_id, visit_id, "waive", waive_fen=501))
    assert err.value.type == "invalid_action" and err.value.non_retryable
    assert [e.kind for e in await rows(factory, LedgerEntry, visit_id=visit_id)] == ["charge"]
    assert [a for a in await rows(factory, AuditLog, subject_id=visit_id) if a.action == "waive"] == []


async def test_a_dispute_opened_then_resolved_with_the_hold_columns(record, visit, factory: Factory) -> None:
    patient_id, visit_id = await visit()
    env = ActivityEnvironment()
    opened = o.DisputeRecord(dispute_id="dsp_a1", status="open", reason="not performed", opened_by="patient:x")
    held = status(patient_id, visit_id, hold_kind="dispute", hold_reason="not performed", hold_since=AT)
    await env.run(record, action(patient_id, visit_id, "open_dispute", dispute=opened, visit=held))
    row = (await rows(factory, Visit, id=visit_id))[0]
    assert (row.hold_kind, row.hold_reason, row.payment_status) == ("dispute", "not performed", "arrears")
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.opened_by, dispute.reason) == ("open", "patient:x", "not performed")
    later = AT + timedelta(days=2)
    resolved = o.DisputeRecord(dispute_id="dsp_a1", status="resolved", outcome="rejected", note="performed")
    await env.run(
        record,
        action(patient_id, visit_id, "resolve_dispute", at=later, dispute=resolved, visit=status(patient_id, visit_id)),
    )
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.outcome, dispute.resolved_by) == ("resolved", "rejected", "op-1")
    assert (await rows(factory, Visit, id=visit_id))[0].hold_kind is None


async def test_an_approval_asked_for_then_decided(record, visit, factory: Factory) -> None:
    patient_id, visit_id = await visit()
    env = ActivityEnvironment()
    asked = o.ApprovalRecord(approval_id="ap-1", status="pending_approval", requested_by="op-1", reason="lost")
    await env.run(record, action(patient_id, visit_id, "write_off", approval=asked))
    decided = o.ApprovalRecord(approval_id="ap-1", status="approved", requested_by="op-1", reason="lost")
    later = AT + timedelta(hours=1)
    await env.run(record, action(patient_id, visit_id, "approve", at=later, approval=decided))
    [row] = await rows(factory, Approval, visit_id=visit_id)
    assert (row.status, row.requested_by, row.decided_by, row.reason) == ("approved", "op-1", "op-1", "lost")


async def test_data_the_database_refuses_fails_for_good(record, visit, factory: Factory) -> None:
    """An action from Temporal UI may carry what no column holds (here an amount no 64-bit
    integer holds): the activity fails at once as `invalid_input`, not retried for ever, and
    the message names no value."""
    patient_id, visit_id = await visit()
    env = ActivityEnvironment()
    opened = o.DisputeRecord(dispute_id="dsp_big", status="open", reason="r", opened_by="patient:x")
    await env.run(record, action(patient_id, visit_id, "open_dispute", dispute=opened))
    huge = o.DisputeRecord(dispute_id="dsp_big", status="resolved", outcome="upheld", waived_fen=2**70)
    with pytest.raises(ApplicationError) as err:
        await env.run(record, action(patient_id, visit_id, "resolve_dispute", at=AT + timedelta(hours=1), dispute=huge))
    assert err.value.type == "invalid_input" and err.value.non_retryable
    assert str(2**70) not in err.value.message
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert dispute.status == "open"


async def test_a_dispute_closed_by_settling_has_no_outcome_but_is_resolved(record, visit, factory: Factory) -> None:
    patient_id, visit_id = await visit()
    env = ActivityEnvironment()
    dispute_id = uid("dsp_")  # the database is the session's: an id of this test's own
    opened = o.DisputeRecord(dispute_id=dispute_id, status="open", reason="r", opened_by="patient:x")
    await env.run(record, action(patient_id, visit_id, "open_dispute", dispute=opened))
    closed = o.DisputeRecord(dispute_id=dispute_id, status="resolved", note="settled before a decision")
    later = AT + timedelta(hours=1)
    await env.run(record, action(patient_id, visit_id, "resolve_dispute", at=later, dispute=closed))
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.outcome, dispute.resolved_by) == ("resolved", None, "op-1")
    assert dispute.resolved_at is not None
