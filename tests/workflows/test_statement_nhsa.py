"""The statement run with the channel `nhsa` through the worker the product builds (its activities
given the bureau): a day without settlements at the bureau nor with us answers 平, and its run is
stored and listed as GET /v1/ops/statements?channel=nhsa lists it."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from activities.nhsa_statement import NHSA
from api import ops
from tests.support import uid
from workflows import contracts as c
from workflows.statement import StatementWorkflow

QUIET_DAY = "2025-01-01"  # nothing settled that day in any test


async def test_the_run_checks_the_bureaus_day_through_the_worker(temporal_env: WorkflowEnvironment, worker, factory):
    result = await temporal_env.client.execute_workflow(
        StatementWorkflow.run,
        c.StatementInput(channels=[NHSA], day=QUIET_DAY, timezone="Asia/Shanghai"),
        id=uid("statements-"),
        task_queue=worker,
    )
    assert [(r.channel, r.day, r.matched, r.mismatches) for r in result.results] == [(NHSA, QUIET_DAY, 0, 0)]
    async with factory() as session:
        [run] = await ops.statements(session, channel=NHSA, day=QUIET_DAY, mismatched=False, limit=5)
    assert (run.channel, run.mismatches, run.ledger_total_fen, run.channel_total_fen) == (NHSA, [], 0, 0)
