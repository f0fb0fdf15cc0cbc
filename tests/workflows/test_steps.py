"""A background step that keeps failing raises a visible alert in Temporal UI after each
round, keeps trying, and clears the alert once it succeeds; a non-retryable failure is raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.support import uid
from worker import WORKFLOW_RUNNER

with workflow.unsafe.imports_passed_through():
    from workflows.retries import Retries
    from workflows.steps import ALERT_AFTER, until_done

RETRIES = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=4),
        non_retryable_error_types=["invalid_input"],
    ),
    start_to_close=timedelta(seconds=5),
)


@activity.defn(name="flaky_call")
async def flaky_call(mode: str) -> str:
    """The declaration the workflow calls (as workflows/activities.py declares the product's)."""
    raise NotImplementedError


@workflow.defn(sandboxed=False)
class StepWorkflow:
    def __init__(self) -> None:
        self.alerts: list[str] = []

    @workflow.run
    async def run(self, mode: str) -> str:
        return await until_done(flaky_call, mode, retries=RETRIES, summary="call the bureau", alert=self._alert)

    def _alert(self, text: str) -> None:
        self.alerts.append(text)
        workflow.set_current_details(text)

    @workflow.query
    def seen(self) -> list[str]:
        return self.alerts


class Bureau:
    """The other side: down until told to come back."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    @activity.defn(name="flaky_call")
    async def call(self, mode: str) -> str:
        self.calls += 1
        if mode == "refuse":
            raise ApplicationError("the bureau refuses this request", type="invalid_input", non_retryable=True)
        if not self.up:
            raise RuntimeError("bureau unreachable")
        return "done"


@asynccontextmanager
async def running(env: WorkflowEnvironment, bureau: Bureau, mode: str) -> AsyncIterator[WorkflowHandle]:
    queue = uid("tq-steps-")
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[StepWorkflow],
        activities=[bureau.call],
        workflow_runner=WORKFLOW_RUNNER,
    ):
        with env.with_time_skipping_disabled():
            handle = await env.client.start_workflow(StepWorkflow.run, mode, id=uid("step-"), task_queue=queue)
        yield handle


async def test_an_alert_after_each_failed_round_then_cleared(temporal_env: WorkflowEnvironment) -> None:
    bureau = Bureau()
    async with running(temporal_env, bureau, "wait") as handle:
        await temporal_env.fast_forward(handle, ALERT_AFTER + timedelta(minutes=1))
        alerts = await handle.query(StepWorkflow.seen)
        assert len(alerts) == 1 and all("call the bureau: still failing" in a for a in alerts)
        assert bureau.calls > 2
        bureau.up = True
        await temporal_env.fast_forward(handle, timedelta(minutes=5))
        assert await asyncio.wait_for(handle.result(), timeout=30) == "done"
        assert (await handle.query(StepWorkflow.seen))[-1] == ""  # the alert is cleared


async def test_a_non_retryable_failure_is_raised_at_once(temporal_env: WorkflowEnvironment) -> None:
    bureau = Bureau()
    async with running(temporal_env, bureau, "refuse") as handle:
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=30)
        assert bureau.calls == 1 and await handle.query(StepWorkflow.seen) == []
