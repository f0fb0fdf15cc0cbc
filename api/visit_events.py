"""A clinical event from the HIS (`POST /v1/his/visits/{visit_id}/events`).

The event goes to the visit's workflow as the `record_event` update, which refuses what the
visit's stage does not allow and books the charges. Its answer is the visit as the workflow
recorded it (stage, payment status, deadlines, sanctions: `c.VisitRecordResult`); the API
answers from it and reads only what the workflow does not carry, in one read: the bill's
lines with their payments' methods, and the events. A retried event gets the stored answer.
The reads are readers' transactions (on SQLite: no write lock), and the stored answer is one
short write of its own."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from api.metrics import EVENTS
from db.models import Visit
from db.session import read_only
from workflows import contracts as c
from workflows.visit import VisitWorkflow

# the update's refusals the HIS can act on: the stage or the items do not allow the event
REFUSED = ("invalid_transition", "unknown_item", "duplicate_item", "invalid_item")


async def record_event(state: AppState, session: AsyncSession, visit: Visit, event: s.VisitEventIn) -> tuple[Any, int]:
    """The answer to the event as JSON data and its status (the stored ones for a retry)."""
    body = event.root
    key = f"event:{visit.id}:{body.event_id}"
    request_hash = svc.body_hash(event.flat())  # the hash v1.0's flat body had: a retry is still known
    if (stored := await svc.replay(session, key, request_hash, code="event_id_reused")) is not None:
        return stored.response, stored.status_code
    await commit_before_call(session)  # no transaction is held while the workflow works
    recorded = await tell_workflow(state, visit, event_input(body))
    EVENTS.labels(str(body.type)).inc()
    reader = await read_only(session)  # on SQLite the view is read without the write lock the bookings want
    data = (await svc.visit_view(session, visit, recorded)).model_dump(mode="json")
    if reader:
        await session.commit()
    svc.remember(session, key, request_hash, 200, data)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent retry of the same event stored the answer first
        await session.rollback()
    return data, 200


def event_input(body: s.VisitEvent) -> c.RecordEventInput:
    items: list[s.OrderItem] = getattr(body, "items", None) or []
    return c.RecordEventInput(
        event_id=body.event_id,
        type=str(body.type),
        occurred_at=body.occurred_at,
        items=[
            c.ItemInput(
                item_id=i.item_id,
                code=i.code,
                name=i.name,
                category=str(i.category),
                unit_price_fen=i.unit_price_fen,
                quantity=i.quantity,
            )
            for i in items
        ],
        item_ids=list(getattr(body, "item_ids", None) or []),
        skin_test_required=bool(getattr(body, "skin_test_required", False)),
        result=getattr(body, "result", None),
        channel=getattr(body, "channel", None),
        room=getattr(body, "room", None),
    )


async def tell_workflow(state: AppState, visit: Visit, inp: c.RecordEventInput) -> c.VisitRecordResult:
    """The `record_event` update; a workflow not running (a registration cut short) is started
    and asked once more. Each request is its own update (Temporal keeps an update's outcome
    under its id: one that failed, `ledger_unavailable`, would answer every retry the same);
    the workflow itself knows the events it booked, so a retried event is booked once."""
    update_id = f"{inp.event_id}:{secrets.token_hex(4)}"
    try:
        try:
            handle = state.temporal.get_workflow_handle(c.workflow_id(visit.id))
            return await handle.execute_update(VisitWorkflow.record_event, inp, id=update_id)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            # not running: never started (a registration cut short), or closed; start it and ask once more
            handle = await svc.ensure_workflow(state, visit)
            return await handle.execute_update(VisitWorkflow.record_event, inp, id=update_id)
    except WorkflowUpdateFailedError as err:
        raise refusal(err) from None
    except RPCError as err:
        if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise
        if await still_running(state, visit):
            # the update was lost, not refused (its workflow task failed under load, say): the
            # event was not booked, and sending it again is safe
            raise ApiError(
                503,
                "engine_unavailable",
                "the visit's workflow did not take the event; nothing was recorded, send it again",
                headers={"Retry-After": "1"},
            ) from None
        raise ApiError(
            409, "invalid_transition", "the visit is closed: its bill is settled", stage=visit.stage, allowed=[]
        ) from None


async def still_running(state: AppState, visit: Visit) -> bool:
    try:
        described = await state.temporal.get_workflow_handle(c.workflow_id(visit.id)).describe()
    except RPCError:
        return False
    return described.status is WorkflowExecutionStatus.RUNNING


def refusal(err: WorkflowUpdateFailedError) -> Exception:
    """The problem for an update the workflow refused (the error itself when it is no refusal)."""
    cause = err.cause
    if not isinstance(cause, ApplicationError):
        return err
    if cause.type in REFUSED:
        info = cause.details[0] if cause.details else {}
        allowed = ", ".join(info.get("allowed", [])) or "none"
        return ApiError(
            409,
            str(cause.type),
            f"{cause.message} (stage {info.get('stage')}; allowed: {allowed})",
            stage=info.get("stage"),
            allowed=info.get("allowed", []),
        )
    if cause.type == "invalid_request":
        return ApiError(422, "invalid_request", cause.message)
    if cause.type == "ledger_unavailable":
        return ApiError(503, "ledger_unavailable", cause.message, headers={"Retry-After": "5"})
    return err
