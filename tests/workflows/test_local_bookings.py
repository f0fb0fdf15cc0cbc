"""A clinical event's booking is first tried as a local activity (no round trip through the
server); when that try fails, the booking goes on as a regular activity with the event's own
retry policy, and the event is booked once, with the same answer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ledger import LedgerActivities
from config import Settings
from db.models import LedgerEntry
from integrations.factory import Integrations
from tests.support import rows, uid
from tests.workflows.test_visit_workflow import event, item, start
from worker import WORKFLOW_RUNNER, activity_functions
from workflows import contracts as c
from workflows.visit import VisitWorkflow

Factory = async_sessionmaker[AsyncSession]


async def test_a_failed_local_try_books_once_as_a_regular_activity(
    temporal_env: WorkflowEnvironment, factory: Factory, settings: Settings, integrations: Integrations
) -> None:
    tries: list[bool] = []  # is_local, for each try of apply_visit_event
    booking = LedgerActivities(factory).apply_visit_event

    @activity.defn(name=c.APPLY_VISIT_EVENT)
    async def flaky(inp: c.ApplyVisitEventInput) -> c.BalanceResult:
        tries.append(activity.info().is_local)
        if activity.info().is_local and inp.event.type == "prescribed":
            raise RuntimeError("the database went away for a moment")
        return await booking(inp)

    activities = [
        flaky if f.__name__ == "apply_visit_event" else f for f in activity_functions(settings, factory, integrations)
    ]
    queue = uid("tq-")
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[VisitWorkflow],
        activities=activities,
        workflow_runner=WORKFLOW_RUNNER,
    ):
        handle, visit_id, _ = await start(temporal_env, factory, queue)
        await event(handle, "e1", "checked_in")
        assert tries == [True]  # the quick way: no regular activity at all
        await event(handle, "e2", "called")
        await event(handle, "e3", "consultation_started")
        answer = await event(handle, "e4", "prescribed", items=[item("rx", "drug", 1200)])
        assert tries[-2:] == [True, False]  # the local try failed, the regular one booked it
        assert (answer.stage, answer.total_fen) == ("prescribed", 500 + 1200)
        booked = [e for e in await rows(factory, LedgerEntry, visit_id=visit_id) if e.amount_fen == 1200]
        assert len(booked) == 1
        history = await handle.fetch_history()
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert scheduled.count(c.APPLY_VISIT_EVENT) == 1
        await handle.terminate("test over")
