"""Every committed history replays with the current workflow code. A change that would
break visits already running fails here; such a change needs `workflow.patched()`.

Record new histories with `YHF_RECORD_HISTORIES=1 make test PYTEST_ARGS=tests/workflows`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOW_RUNNER
from workflows.insurance import InsurancePaymentWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.refund import RefundWorkflow
from workflows.statement import StatementWorkflow
from workflows.visit import VisitWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    assert len(HISTORIES) >= 5, "the replay tests need recorded histories"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"visit-{path.stem}", path.read_text())
    replayer = Replayer(workflows=[VisitWorkflow, ReconcileWorkflow, RefundWorkflow, StatementWorkflow,
                                   InsurancePaymentWorkflow], workflow_runner=WORKFLOW_RUNNER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
