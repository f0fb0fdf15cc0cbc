"""Every committed history replays with the current workflow code. A change that would
break workflows already running fails here. Before the first deployment the fix is to delete
the histories that no longer replay and record them again. From the first deployment on, a
change to a running workflow's shape goes `workflow.patched("id")` (old and new paths, with
histories of both) -> `workflow.deprecate_patch("id")` once no run of the old path is left ->
removed once no run carries the marker, each step replayed against the histories before it.

Record new histories with `YHF_RECORD_HISTORIES=1` over the tests that call `record()`:
`make test PYTEST_ARGS="tests/workflows tests/api/test_insurance.py tests/api/test_insurance_reversal.py
tests/api/test_insurance_mobile.py tests/e2e/test_wechat.py"`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOW_RUNNER
from workflows.insurance import InsurancePaymentWorkflow
from workflows.insurance_mobile import MobileInsurancePaymentWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.refund import RefundWorkflow
from workflows.statement import StatementWorkflow
from workflows.visit import VisitWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
WORKFLOWS = [
    VisitWorkflow,
    ReconcileWorkflow,
    RefundWorkflow,
    StatementWorkflow,
    InsurancePaymentWorkflow,
    MobileInsurancePaymentWorkflow,
]


def test_every_workflow_has_a_history() -> None:
    recorded = {
        WorkflowHistory.from_json(p.stem, p.read_text())
        .events[0]
        .workflow_execution_started_event_attributes.workflow_type.name
        for p in HISTORIES
    }
    assert recorded == {w.__name__ for w in WORKFLOWS}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"visit-{path.stem}", path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, workflow_runner=WORKFLOW_RUNNER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
