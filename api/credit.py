"""The credit platform's objections (异议): each opens a dispute on the visit through the same
path as a patient's (api/oversight.py, the visit workflow's `operator_action` update), once per
objection id, or joins the dispute already open on it. On a visit whose workflow has closed
the dispute is written here, outside it, and decided here too (`resolve_on_closed_visit`, from
the operators' resolve). The credit upkeep (workflows/credit_upkeep.py) tells the platform how
it ended."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import oversight, schemas as s
from api.deps import AppState
from api.errors import ApiError
from api.schemas.credit import CreditObjectionIn, CreditObjectionOut
from db.models import CreditObjection, CreditReport, Visit
from db.oversight import Dispute
from db.repositories import audit, utcnow
from domain.oversight import ActionRefusal
from domain.sanctions import CreditReportKind, DisputeOutcome, DisputeStatus, OperatorAction
from integrations.credit_platform import OBJECTION_OPENER, OBJECTION_OPENER_VISIT_CLOSED

OPENER = OBJECTION_OPENER


def objection_out(row: CreditObjection) -> CreditObjectionOut:
    return CreditObjectionOut(
        objection_id=row.id,
        visit_id=row.visit_id,
        dispute_id=row.dispute_id,
        status="open" if row.answer is None else row.answer,  # ObjectionAnswer's values
    )


async def objection(state: AppState, session: AsyncSession, body: CreditObjectionIn) -> tuple[dict[str, Any], int]:
    """201 with the dispute opened; the same objection again: 200 with the same answer."""
    known = await session.get(CreditObjection, body.objection_id)
    if known is not None:
        return objection_out(known).model_dump(mode="json"), 200
    report = await session.scalar(
        select(CreditReport).where(
            CreditReport.record_id == body.record_id, CreditReport.kind == CreditReportKind.report
        )
    )
    if report is None or report.visit_id != body.account_no:
        raise ApiError(404, "record_not_found", f"no report of ours is record {body.record_id} ({body.account_no})")
    visit = await oversight.get_visit(session, report.visit_id)
    dispute_id = await dispute_for(state, session, visit, body)
    row = CreditObjection(
        id=body.objection_id,
        visit_id=visit.id,
        record_id=body.record_id,
        dispute_id=dispute_id,
        reason=body.reason,
        received_at=utcnow(),
    )
    session.add(row)
    audit(
        session,
        actor=OPENER,
        action="credit_objection_received",
        subject_type="visit",
        subject_id=visit.id,
        reason=body.reason[:300],
        objection_id=body.objection_id,
        record_id=body.record_id,
        dispute_id=row.dispute_id,
        raised_at=body.raised_at.isoformat(),
    )
    return objection_out(row).model_dump(mode="json"), 201


async def dispute_for(state: AppState, session: AsyncSession, visit: Visit, body: CreditObjectionIn) -> str:
    """The dispute the objection opens; with one open on the visit already (the patient's, or an
    earlier objection's), that one: the objection is answered when it is resolved."""
    reason = f"credit objection {body.objection_id}: {body.reason}"[:200]
    try:
        opened = await oversight.open_dispute(
            state,
            session,
            visit,
            s.DisputeIn(reason=reason),
            opener=OPENER,
            keys=OPENER,
            idempotency_key=f"objection:{body.objection_id}",
        )
    except oversight.VisitClosed:
        return await dispute_on_closed_visit(session, visit, body, reason)
    except ApiError as err:
        if err.code != ActionRefusal.dispute_open:
            raise
        open_one = await session.scalar(
            select(Dispute.id).where(Dispute.visit_id == visit.id, Dispute.status == str(DisputeStatus.open))
        )
        if open_one is None:  # resolved meanwhile: the platform sends it again and opens the next
            raise
        return open_one
    return str(opened["dispute_id"])


# --- a visit whose workflow has closed ------------------------------------------------------


async def dispute_on_closed_visit(session: AsyncSession, visit: Visit, body: CreditObjectionIn, reason: str) -> str:
    """The objection's dispute on a visit whose workflow has closed (written off, settled past
    its refund window): written here, outside the workflow (no sanctions are left to hold), in
    the operators' queue (`GET /v1/ops/disputes`) like any other. With one open on the visit
    already (an earlier objection's), that one."""
    open_one = await session.scalar(
        select(Dispute.id).where(Dispute.visit_id == visit.id, Dispute.status == str(DisputeStatus.open))
    )
    if open_one is not None:
        return open_one
    dispute_id = "dsp_" + hashlib.sha256(f"objection:{body.objection_id}".encode()).hexdigest()[:16]
    try:
        async with session.begin_nested():
            session.add(
                Dispute(
                    id=dispute_id,
                    visit_id=visit.id,
                    patient_id=visit.patient_id,
                    status=str(DisputeStatus.open),
                    reason=reason,
                    opened_by=OBJECTION_OPENER_VISIT_CLOSED,
                    opened_at=utcnow(),
                )
            )
    except IntegrityError:  # another objection opened one meanwhile: join it
        found = await session.scalar(
            select(Dispute.id).where(Dispute.visit_id == visit.id, Dispute.status == str(DisputeStatus.open))
        )
        if found is None:
            raise
        return found
    audit(
        session,
        actor=OPENER,
        action=str(OperatorAction.open_dispute),
        subject_type="visit",
        subject_id=visit.id,
        reason=reason,
        dispute_id=dispute_id,
        visit_closed=True,
    )
    return dispute_id


async def resolve_on_closed_visit(
    session: AsyncSession, row: Dispute, body: s.DisputeResolveIn, *, operator: str
) -> None:
    """An operator decides an objection's dispute on a closed visit: upheld, the credit upkeep
    deletes the visit's records at the platform and answers `corrected`; rejected, it answers
    `confirmed`. Nothing is waived (the visit owes nothing it can still be asked for): a
    `waive_fen` is refused. The audit names the operator."""
    if body.waive_fen:
        raise ApiError(
            409, ActionRefusal.invalid_action, f"visit {row.visit_id} is closed: nothing is waived on it any more"
        )
    fresh = await session.get(Dispute, row.id, with_for_update=True, populate_existing=True)
    assert fresh is not None
    if fresh.status != DisputeStatus.open:
        raise ApiError(409, ActionRefusal.invalid_action, f"dispute {row.id} is resolved already ({fresh.outcome})")
    now = utcnow()
    fresh.status, fresh.outcome, fresh.note = str(DisputeStatus.resolved), str(body.outcome), body.note
    fresh.waived_fen, fresh.resolved_by, fresh.resolved_at = 0, operator, now
    audit(
        session,
        actor=operator,
        action=str(OperatorAction.resolve_dispute),
        subject_type="visit",
        subject_id=row.visit_id,
        reason=body.note,
        at=now,
        dispute_id=row.id,
        outcome=str(body.outcome),
        visit_closed=True,
        effect="the records deleted at the platform" if body.outcome == DisputeOutcome.upheld else "the record stands",
    )
