"""A credit objection (异议) on a visit whose workflow has closed (written off, or settled): the platform's
call is accepted (201) and its dispute put in the operators' queue; an operator decides it and
the credit upkeep answers the platform: upheld, the visit's records deleted there and the
objection `corrected`; rejected, `confirmed` and the record kept. The audit names who decided.
Over ASGI, with the simulated credit platform and this test's worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from config import Settings
from tests.api.test_credit_objections import acts, reported_visit
from tests.api.test_oversight import ALICE, audit
from tests.api.test_written_off import write_off
from tests.flows import Clinic, assert_problem
from tests.support import uid
from workflows import contracts as c, contracts_credit as k
from workflows.credit_upkeep import CreditUpkeepWorkflow

__all__ = ["acts"]  # the fixture, shared with the open visits' objections


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The tests' settings (tests/conftest.py) with no refund window: a settled visit's workflow
    closes at once."""
    return Settings(
        sandbox=True,
        database_url=database_url,
        task_queue=uid("tq-"),
        sms_code_min_interval=timedelta(seconds=1),
        sms_codes_per_ip_hour=10_000,
        refund_window=timedelta(0),
    )


async def closed_visit(api, clinic: Clinic, acts, factory, temporal_env, closure: str) -> tuple[str, str]:
    """A visit reported to the platform, then written off or paid: its workflow has closed."""
    patient_id, visit_id = await reported_visit(clinic, acts, factory)
    if closure == "written_off":
        await write_off(api, visit_id)
    else:
        r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 5000, "method": "cash"})
        assert r.status_code == 201, r.text
    handle = temporal_env.client.get_workflow_handle(c.workflow_id(visit_id))
    await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    return patient_id, visit_id


async def upkeep(temporal_env, worker: str) -> list[str]:
    done = await temporal_env.client.execute_workflow(
        CreditUpkeepWorkflow.run, k.CreditUpkeepInput(retention_days=1826), id=uid("credit-upkeep-"), task_queue=worker
    )
    return list(done.done)


@pytest.mark.parametrize("closure", ["written_off", "settled"])
@pytest.mark.parametrize(("outcome", "answer"), [("upheld", "corrected"), ("rejected", "confirmed")])
async def test_an_objection_on_a_closed_visit_is_heard_and_answered(
    api, clinic: Clinic, acts, factory, simulators, temporal_env, worker: str, outcome: str, answer: str, closure: str
) -> None:
    patient_id, visit_id = await closed_visit(api, clinic, acts, factory, temporal_env, closure)
    simulators.credit.state.callback = api.http  # the platform reaches this API
    platform = simulators.inspect._credit
    first = await platform.post("_sandbox/objections", json={"account_no": visit_id, "reason": "不是我欠的"})
    assert first.json()["callback_status"] == 201, first.text
    opened = first.json()["callback_answer"]
    assert opened["status"] == "open" and opened["visit_id"] == visit_id
    # a retry gets the same answer; a second objection joins the same dispute
    again = await platform.post("_sandbox/objections", json={"objection_id": first.json()["objection_id"]})
    assert again.json()["callback_status"] == 200 and again.json()["callback_answer"] == opened
    second = await platform.post("_sandbox/objections", json={"account_no": visit_id, "reason": "金额不对"})
    assert (
        second.json()["callback_status"] == 201
        and second.json()["callback_answer"]["dispute_id"] == (opened["dispute_id"])
    )
    ids = [first.json()["objection_id"], second.json()["objection_id"]]

    # in the operators' queue, as any dispute
    queue = (await api.http.get("/v1/ops/disputes", params={"status": "open"}, headers=api.ops)).json()
    [mine] = [d for d in queue if d["visit_id"] == visit_id]
    assert (mine["dispute_id"], mine["opened_by"]) == (opened["dispute_id"], "credit_platform:visit_closed")
    assert set(ids).isdisjoint(await upkeep(temporal_env, worker))  # undecided: not answered
    path = f"/v1/ops/disputes/{opened['dispute_id']}/resolve"
    if outcome == "upheld":  # nothing is waived on a closed visit
        assert_problem(
            await api.ops_post(path, {"outcome": "upheld", "note": "x", "waive_fen": 100}, headers=ALICE),
            409,
            "invalid_action",
        )
    r = await api.ops_post(path, {"outcome": outcome, "note": "checked with the HIS"}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["outcome"], r.json()["resolved_by"]) == ("resolved", outcome, "alice")
    assert_problem(
        await api.ops_post(path, {"outcome": outcome, "note": "again"}, headers=ALICE), 409, "invalid_action"
    )

    assert set(ids) <= set(await upkeep(temporal_env, worker))
    told = {o["objection_id"]: o for o in (await platform.get("_sandbox/objections")).json()}
    assert [told[i]["answer"] for i in ids] == [answer, answer]
    records = (await platform.get("_sandbox/records", params={"visit_id": visit_id})).json()
    assert records and all((r["deleted_at"] is not None) == (outcome == "upheld") for r in records)
    assert set(ids).isdisjoint(await upkeep(temporal_env, worker))  # answered once

    entries = await audit(api, visit_id)
    [decided] = [e for e in entries if e["action"] == "resolve_dispute"]
    assert decided["actor"] == "alice" and decided["detail"]["visit_closed"] is True
    answered = [e for e in entries if e["action"] == f"credit_objection_{answer}"]
    assert {e["detail"]["objection_id"] for e in answered} == set(ids)
    assert {e["detail"]["decided_by"] for e in answered} == {"alice"}
    deleted: list[dict[str, Any]] = (
        await api.http.get(
            "/v1/ops/audit",
            params={"subject_type": "patient", "subject_id": patient_id, "action": "credit_record_deleted"},
            headers=api.ops,
        )
    ).json()
    if outcome == "upheld":
        assert deleted and all("upheld by alice" in (e["reason"] or "") for e in deleted)
    else:
        assert deleted == []
