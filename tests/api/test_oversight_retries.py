"""Operators' actions and disputes retried and refused: a refusal wrapped in an activity's
failure is still a refusal, a retry gets the first answer (actions, a second operator's
decision, disputes from the app and the window), the audit across visits, and what the
patient reads of an operator's hold."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api import oversight
from api.errors import ApiError
from tests.api.test_oversight import ALICE, BOB, act, discharged_visit
from tests.api.test_patient import sign_in
from tests.flows import Clinic, assert_problem
from tests.support import uid
from workflows import contracts as c


def update_failed(cause: BaseException) -> WorkflowUpdateFailedError:
    """How an update fails when its handler's activity raised `cause`."""
    activity = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="record_operator_action",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    activity.__cause__ = cause
    return WorkflowUpdateFailedError(activity)


def test_a_refusal_inside_an_activity_failure_is_a_refusal() -> None:
    wrapped = oversight.refusal(update_failed(ApplicationError("waive more than owed", type="invalid_action")))
    assert isinstance(wrapped, ApiError) and (wrapped.status, wrapped.code) == (409, "invalid_action")
    deeper = ApplicationError("outer", type="activity_failed")
    deeper.__cause__ = ApplicationError("an open dispute already", type="dispute_open")
    found = oversight.refusal(update_failed(deeper))
    assert isinstance(found, ApiError) and (found.status, found.code) == (409, "dispute_open")
    direct = oversight.refusal(WorkflowUpdateFailedError(ApplicationError("x", type="same_operator")))
    assert isinstance(direct, ApiError) and (direct.status, direct.code) == (409, "same_operator")
    unknown = update_failed(ApplicationError("disk full", type="OSError"))
    assert oversight.refusal(unknown) is unknown  # no refusal: the error itself (a 500)
    bare = update_failed(RuntimeError("boom"))
    assert oversight.refusal(bare) is bare


async def test_a_wrapped_refusal_answers_409_and_an_unknown_failure_500(
    api, clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, visit_id = await discharged_visit(clinic)
    failure: list[BaseException] = []

    async def execute_update(self: WorkflowHandle[Any, Any], *args: Any, **kw: Any) -> Any:
        raise failure[0]

    monkeypatch.setattr(WorkflowHandle, "execute_update", execute_update)
    waive = {"action": "waive", "reason": "hardship", "amount_fen": 100}
    failure.append(update_failed(ApplicationError("the ledger refused", type="invalid_action", non_retryable=True)))
    assert_problem(await act(api, visit_id, waive), 409, "invalid_action")
    failure[0] = update_failed(RuntimeError("boom"))
    body = assert_problem(await act(api, visit_id, waive), 500, "internal_error")
    assert body["request_id"]


async def test_an_action_key_used_on_another_visit_is_refused(api, clinic: Clinic) -> None:
    _, _, first = await discharged_visit(clinic)
    _, _, second = await discharged_visit(clinic)
    pause = {"action": "pause_sanctions", "reason": "patient called"}
    key = uid("pause-")
    r = await act(api, first, pause, key=key)
    assert r.status_code == 200, r.text
    assert_problem(await act(api, second, pause, key=key), 409, "idempotency_key_reused")
    assert (await api.his_get(f"/v1/his/visits/{second}")).json()["hold"] is None
    again = await act(api, first, pause, key=key)
    assert (again.status_code, again.json()) == (200, r.json())


async def write_off_pending(api, clinic: Clinic) -> tuple[str, str]:
    _, _, visit_id = await discharged_visit(clinic, fee=8000)
    r = await act(api, visit_id, {"action": "write_off", "reason": "patient deceased"})
    assert r.status_code == 202, r.text
    return visit_id, r.json()["approval_id"]


async def closed(handle: WorkflowHandle[Any, Any]) -> None:
    """The visit's workflow closed: terminated here, unless it already finished on its own (a
    written-off visit with no refund window ends at once)."""
    try:
        await handle.terminate("closed for this test")
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    assert (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING


async def test_a_second_operators_decision_retried_gets_the_first_answer(
    api, clinic: Clinic, temporal_env: WorkflowEnvironment
) -> None:
    visit_id, approval_id = await write_off_pending(api, clinic)
    decide = {"decision": "approve", "reason": "checked the certificate"}
    r = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=BOB)
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "written_off"
    # the same operator's same decision again, once the workflow has closed: the first answer
    await closed(temporal_env.client.get_workflow_handle(c.workflow_id(visit_id)))
    again = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=BOB)
    assert (again.status_code, again.json()) == (200, r.json())
    # another decision, or another operator, is no retry
    r2 = await api.ops_post(f"/v1/ops/approvals/{approval_id}", {**decide, "decision": "reject"}, headers=BOB)
    assert_problem(r2, 409, "invalid_action")
    carol = {"X-Operator-Id": "carol"}
    assert_problem(await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=carol), 409, "invalid_action")


async def test_a_decision_with_an_idempotency_key(api, clinic: Clinic) -> None:
    _, approval_id = await write_off_pending(api, clinic)
    key = {**BOB, "Idempotency-Key": uid("decide-")}
    decide = {"decision": "reject", "reason": "try the phone again"}
    r = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=key)
    assert r.status_code == 200, r.text
    again = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=key)
    assert (again.status_code, again.json()) == (200, r.json())
    other = await api.ops_post(f"/v1/ops/approvals/{approval_id}", {**decide, "reason": "other"}, headers=key)
    assert_problem(other, 409, "idempotency_key_reused")
    # the same operator's same decision without the key is the same retry
    plain = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=BOB)
    assert (plain.status_code, plain.json()) == (200, r.json())


async def test_a_patients_dispute_retried_gets_the_same_dispute(api, clinic: Clinic) -> None:
    _, phone, visit_id = await discharged_visit(clinic)
    auth, _ = await sign_in(api, clinic, phone)
    keyed = {**auth, "Idempotency-Key": uid("dispute-")}
    body = {"reason": "我没有做CT"}
    r = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json=body, headers=keyed)
    assert r.status_code == 201, r.text
    again = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json=body, headers=keyed)
    assert (again.status_code, again.json()) == (201, r.json())
    other = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json={"reason": "另一个"}, headers=keyed)
    assert_problem(other, 409, "idempotency_key_reused")
    # without the key, a second dispute on the visit is refused as before
    plain = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json=body, headers=auth)
    assert_problem(plain, 409, "dispute_open")
    found = await api.http.get(f"/v1/ops/disputes?visit_id={visit_id}", headers=api.ops)
    assert [d["dispute_id"] for d in found.json()] == [r.json()["dispute_id"]]


async def test_the_windows_dispute_retried_gets_the_same_dispute(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic)
    _, _, second = await discharged_visit(clinic)
    keyed = {**ALICE, "Idempotency-Key": uid("his-dispute-")}
    body = {"reason": "窗口代为申诉"}
    r = await api.his_post(f"/v1/his/visits/{visit_id}/disputes", body, headers=keyed)
    assert r.status_code == 201, r.text
    again = await api.his_post(f"/v1/his/visits/{visit_id}/disputes", body, headers=keyed)
    assert (again.status_code, again.json()) == (201, r.json())
    # the same key on another visit is another request
    assert_problem(
        await api.his_post(f"/v1/his/visits/{second}/disputes", body, headers=keyed), 409, "idempotency_key_reused"
    )
    assert (await api.his_get(f"/v1/his/visits/{second}")).json()["hold"] is None


async def test_an_operators_actions_across_visits_newest_first(api, clinic: Clinic) -> None:
    _, _, first = await discharged_visit(clinic)
    _, _, second = await discharged_visit(clinic)
    dora = {"X-Operator-Id": uid("dora-")}
    r = await act(api, first, {"action": "pause_sanctions", "reason": "in hospital"}, operator=dora)
    assert r.status_code == 200, r.text
    r = await act(api, second, {"action": "waive", "reason": "hardship", "amount_fen": 100}, operator=dora)
    assert r.status_code == 200, r.text
    r = await api.http.get(f"/v1/ops/audit?operator={dora['X-Operator-Id']}", headers=api.ops)
    assert r.status_code == 200, r.text
    entries = r.json()
    assert [(e["subject_id"], e["reason"]) for e in entries] == [(second, "hardship"), (first, "in hospital")]
    assert all(e["operator"] == e["actor"] == dora["X-Operator-Id"] for e in entries)
    assert entries[0]["at"] >= entries[1]["at"]
    by_actor = await api.http.get(f"/v1/ops/audit?actor={dora['X-Operator-Id']}&limit=1", headers=api.ops)
    assert [e["subject_id"] for e in by_actor.json()] == [second]
    action = entries[1]["action"]
    only = await api.http.get(f"/v1/ops/audit?operator={dora['X-Operator-Id']}&action={action}", headers=api.ops)
    assert [e["subject_id"] for e in only.json()] == [first]
    # a visit's trail still shows every field, the operator's entry among them
    trail = (await api.http.get(f"/v1/ops/audit?subject_type=visit&subject_id={first}", headers=api.ops)).json()
    assert {"at", "actor", "operator", "action", "subject_type", "subject_id", "reason", "detail"} <= set(trail[0])
    assert any(e["operator"] == dora["X-Operator-Id"] for e in trail)
    assert_problem(await api.http.get("/v1/ops/audit?actor=a&operator=b", headers=api.ops), 422, "invalid_request")
    assert_problem(await api.http.get("/v1/ops/audit?actor=a", headers=api.his), 401, "unauthorized")


async def test_the_patient_does_not_read_an_operators_reason(api, clinic: Clinic) -> None:
    _, phone, visit_id = await discharged_visit(clinic)
    auth, _ = await sign_in(api, clinic, phone)
    pause = {"action": "pause_sanctions", "reason": "内部备注: 疑似欺诈, 待核实"}
    assert (await act(api, visit_id, pause)).status_code == 200
    mine = (await api.http.get(f"/v1/patient/visits/{visit_id}", headers=auth)).json()
    assert mine["hold"]["kind"] == "operator" and mine["hold"]["reason"] == "暂缓催收"
    listed = (await api.http.get("/v1/patient/visits", headers=auth)).json()
    assert [v["hold"]["reason"] for v in listed if v["visit_id"] == visit_id] == ["暂缓催收"]
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["hold"]["reason"] == pause["reason"]
    # a dispute hold shows the patient's own words
    assert (await act(api, visit_id, {"action": "resume_sanctions", "reason": "checked"})).status_code == 200
    r = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json={"reason": "收费错误"}, headers=auth)
    assert r.status_code == 201, r.text
    mine = (await api.http.get(f"/v1/patient/visits/{visit_id}", headers=auth)).json()
    assert (mine["hold"]["kind"], mine["hold"]["reason"]) == ("dispute", "收费错误")
