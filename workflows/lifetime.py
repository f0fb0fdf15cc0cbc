"""A visit's lifetime with an end (issue 10): a visit the HIS never discharges is discharged
by the workflow after `auto_discharge_after_seconds`, and a visit unpaid for months continues
as new before its history grows long, carrying all it knows (holds, notice times, the open
dispute, a pending write-off...); handlers finish first."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow

from domain.policy import PaymentStatus
from domain.visit import Category, Stage, VisitState
from workflows import activities as a, contracts as c
from workflows.visit_context import VisitContext

AUTO_DISCHARGE_EVENT = "auto-discharge"


async def await_discharge(v: VisitContext, seen: set[str], lock: asyncio.Lock) -> None:
    """Until the HIS discharges the visit, or the workflow does when it never does."""
    after = timedelta(seconds=v.policy.auto_discharge_after_seconds)
    left = workflow.info().start_time + after - workflow.now()
    try:
        await workflow.wait_condition(
            lambda: v.discharged_at is not None,
            timeout=max(left, timedelta(0)),
            timeout_summary="auto-discharge: the HIS never discharged the visit",
        )
    except TimeoutError:
        async with lock:
            if v.discharged_at is None:
                await auto_discharge(v, seen)


async def auto_discharge(v: VisitContext, seen: set[str]) -> None:
    """Discharge the visit as the HIS would have, marked as the workflow's (visit_event
    `discharged` with `auto`, visit.auto_discharged, the audit); items not performed stay."""
    now = workflow.now()
    event = c.RecordEventInput(event_id=AUTO_DISCHARGE_EVENT, type="discharged", occurred_at=now)
    booking = c.ApplyVisitEventInput(
        visit_id=v.visit_id, patient_id=v.patient_id, event=event, stage_after=str(Stage.discharged), auto=True
    )
    v.bill = await v.step(a.apply_visit_event, booking, "auto-discharge: the HIS never discharged the visit")
    seen.add(AUTO_DISCHARGE_EVENT)
    v.visit = replace(v.visit, stage=Stage.discharged)
    v.discharged_at = v.his_discharged_at = now
    v.auto_discharged = True
    v.describe()


def history_full(v: VisitContext) -> bool:
    info = workflow.info()
    return info.is_continue_as_new_suggested() or info.get_current_history_length() >= v.input.continue_after_events


async def continue_as_new(v: VisitContext, seen: set[str]) -> None:
    """Start the visit's next run with all it knows; handlers finish first."""
    await workflow.wait_condition(workflow.all_handlers_finished)
    workflow.continue_as_new(replace(v.input, carried=carry(v, seen)))


def carry(v: VisitContext, seen: set[str]) -> c.VisitCarry:
    s = v.visit
    return c.VisitCarry(
        stage=str(s.stage),
        consultation_open=s.consultation_open,
        active_items={k: str(cat) for k, cat in s.active_items.items()},
        cancelled_items=sorted(s.cancelled_items),
        pending_results=sorted(s.pending_results),
        infusion_prescribed=s.infusion_prescribed,
        infusion_done=s.infusion_done,
        seen=sorted(seen),
        discharged_at=v.discharged_at,
        his_discharged_at=v.his_discharged_at,
        auto_discharged=v.auto_discharged,
        status=str(v.status),
        recorded=v.recorded,
        in_arrears=v.in_arrears,
        last_dunning_at=v.last_dunning_at,
        dunning_sent=v.dunning_sent,
        notice_sent_at=v.notice_sent_at,
        sanctions=v.sanctions,
        dispute_id=v.dispute_id,
        pending=v.pending,
        refunded_fen=v.refunded_fen,
        bill_fen=(v.bill.total_fen, v.bill.paid_fen, v.bill.balance_fen, v.bill.waived_fen),
        runs=(v.input.carried.runs if v.input.carried else 1) + 1,
    )


def restore(v: VisitContext, k: c.VisitCarry) -> set[str]:
    """The run before's state in this run's context; the event ids it recorded."""
    v.visit = VisitState(
        stage=Stage(k.stage),
        consultation_open=k.consultation_open,
        active_items={i: Category(cat) for i, cat in k.active_items.items()},
        cancelled_items=frozenset(k.cancelled_items),
        pending_results=frozenset(k.pending_results),
        infusion_prescribed=k.infusion_prescribed,
        infusion_done=k.infusion_done,
    )
    v.registered = True
    v.discharged_at, v.his_discharged_at, v.auto_discharged = k.discharged_at, k.his_discharged_at, k.auto_discharged
    v.status, v.recorded = PaymentStatus(k.status), k.recorded
    v.in_arrears, v.last_dunning_at, v.dunning_sent = k.in_arrears, k.last_dunning_at, k.dunning_sent
    v.notice_sent_at, v.sanctions = k.notice_sent_at, k.sanctions
    v.dispute_id, v.pending, v.refunded_fen = k.dispute_id, k.pending, k.refunded_fen
    total, paid, balance, waived = k.bill_fen
    v.bill = c.BalanceResult(total_fen=total, paid_fen=paid, balance_fen=balance, waived_fen=waived)
    return set(k.seen)
