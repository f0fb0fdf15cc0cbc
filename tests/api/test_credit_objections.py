"""The credit platform's objections (异议) through the contract: its signed call opens a dispute
on the visit (the operators' path), once per objection id; the dispute's resolution answers
the platform (the credit upkeep workflow, on this test's worker). And the audit shows the
records deleted at the end of their retention. Times given to the activities are pinned."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from config import Settings
from integrations.signing import signed_headers
from tests.activities.test_credit import AT, pre_default_sms, reported_and_settled
from tests.api.test_oversight import ALICE, audit, discharged_visit
from tests.flows import Clinic, assert_problem
from tests.support import uid
from worker import activity_functions
from workflows import contracts as c, contracts_credit as k
from workflows.credit_upkeep import CreditUpkeepWorkflow

PATH = "/v1/credit/objections"


@pytest.fixture
def acts(settings: Settings, factory, integrations) -> dict[str, Any]:
    return {f.__name__: f for f in activity_functions(settings, factory, integrations)}


async def reported_visit(clinic: Clinic, acts, factory) -> tuple[str, str]:
    """A discharged visit, reported to the platform (as the workflow reports a default)."""
    patient_id, _, visit_id = await discharged_visit(clinic)
    await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=2))
    inp = c.ReportCreditInput(kind="report", patient_id=patient_id, visit_id=visit_id, amount_fen=5000, at=AT)
    await ActivityEnvironment().run(acts["report_credit"], inp)
    return patient_id, visit_id


def signed(settings: Settings, body: dict[str, Any], *, app_id: str | None = None, secret: str | None = None):
    raw = json.dumps(body).encode()
    headers = signed_headers(
        app_id or settings.credit_platform_app_id, secret or settings.credit_platform_secret, "POST", PATH, raw
    )
    return raw, headers


async def test_an_objection_opens_a_dispute_and_its_rejection_confirms_the_record(
    api, clinic: Clinic, acts, factory, simulators, temporal_env, worker: str
) -> None:
    _, visit_id = await reported_visit(clinic, acts, factory)
    simulators.credit.state.callback = api.http  # the platform reaches this API
    platform = simulators.inspect._credit
    r = await platform.post("_sandbox/objections", json={"account_no": visit_id, "reason": "不是我欠的"})
    assert r.status_code == 200 and r.json()["callback_status"] == 201, r.text
    opened = r.json()["callback_answer"]
    objection_id = r.json()["objection_id"]
    assert opened["status"] == "open" and opened["visit_id"] == visit_id and opened["objection_id"] == objection_id
    # the platform calls again (a retry): the same answer, one dispute
    again = await platform.post("_sandbox/objections", json={"objection_id": objection_id})
    assert again.json()["callback_status"] == 200 and again.json()["callback_answer"] == opened
    disputes = (await api.http.get(f"/v1/ops/disputes?visit_id={visit_id}", headers=api.ops)).json()
    assert [(d["dispute_id"], d["status"], d["opened_by"]) for d in disputes] == [
        (opened["dispute_id"], "open", "credit_platform")
    ]
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["hold"]["kind"] == "dispute"
    # the operator rejects it; the next upkeep tells the platform the record stands
    r = await api.ops_post(
        f"/v1/ops/disputes/{opened['dispute_id']}/resolve",
        {"outcome": "rejected", "note": "the bill is theirs"},
        headers=ALICE,
    )
    assert r.status_code == 200, r.text
    done = await temporal_env.client.execute_workflow(
        CreditUpkeepWorkflow.run, k.CreditUpkeepInput(retention_days=1826), id=uid("credit-upkeep-"), task_queue=worker
    )
    assert objection_id in done.done
    told = {o["objection_id"]: o["answer"] for o in (await platform.get("_sandbox/objections")).json()}
    assert told[objection_id] == "confirmed"
    actions = [a["action"] for a in await audit(api, visit_id)]
    assert "credit_objection_received" in actions and "credit_objection_confirmed" in actions


async def test_the_platforms_signature_is_checked_first(api, clinic: Clinic, acts, factory, settings) -> None:
    _, visit_id = await reported_visit(clinic, acts, factory)
    body = {
        "objection_id": uid("OBJ"),
        "record_id": "CRNOSUCH",
        "account_no": visit_id,
        "reason": "x",
        "raised_at": AT.isoformat(),
    }
    raw, headers = signed(settings, body)
    r = await api.http.post(PATH, content=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 401, "signature_missing")
    raw, headers = signed(settings, body, secret="guessed")
    assert_problem(await api.http.post(PATH, content=raw, headers=headers), 401, "invalid_signature")
    raw, headers = signed(settings, body, app_id="another-hospital")
    assert_problem(await api.http.post(PATH, content=raw, headers=headers), 403, "unknown_app")
    raw, headers = signed(settings, body)
    tampered = raw.replace(b'"x"', b'"y"')
    assert_problem(await api.http.post(PATH, content=tampered, headers=headers), 401, "invalid_signature")
    raw, headers = signed(settings, {**body, "raised_at": "yesterday"})
    assert_problem(await api.http.post(PATH, content=raw, headers=headers), 422, "invalid_request")
    raw, headers = signed(settings, body)
    assert_problem(await api.http.post(PATH, content=raw, headers=headers), 404, "record_not_found")
    # none of it opened a dispute
    assert (await api.http.get(f"/v1/ops/disputes?visit_id={visit_id}", headers=api.ops)).json() == []


async def test_the_audit_shows_records_deleted_after_their_retention(api, acts, factory, simulators) -> None:
    settled_at = AT + timedelta(days=4)
    patient_id, _ = await reported_and_settled(acts, factory, settled_at)
    sweep = k.CreditSweepInput(at=settled_at + timedelta(days=1826), retention_days=1826)
    await ActivityEnvironment().run(acts["expire_credit_records"], sweep)
    r = await api.http.get(
        f"/v1/ops/audit?subject_type=patient&subject_id={patient_id}&action=credit_record_deleted", headers=api.ops
    )
    assert r.status_code == 200, r.text
    entries = r.json()
    assert len(entries) == 2 and {e["actor"] for e in entries} == {"credit_upkeep"}
    assert all(e["at"].startswith("2031-03-") for e in entries), entries


async def test_a_second_objection_joins_the_open_dispute_and_both_are_answered(
    api, clinic: Clinic, acts, factory, simulators, temporal_env, worker: str
) -> None:
    _, visit_id = await reported_visit(clinic, acts, factory)
    simulators.credit.state.callback = api.http
    platform = simulators.inspect._credit
    first = await platform.post("_sandbox/objections", json={"account_no": visit_id, "reason": "不是我欠的"})
    second = await platform.post("_sandbox/objections", json={"account_no": visit_id, "reason": "金额不对"})
    assert first.json()["callback_status"] == 201 and second.json()["callback_status"] == 201, second.text
    dispute_id = first.json()["callback_answer"]["dispute_id"]
    assert second.json()["callback_answer"]["dispute_id"] == dispute_id  # no second dispute, no refusal
    disputes = (await api.http.get(f"/v1/ops/disputes?visit_id={visit_id}", headers=api.ops)).json()
    assert [d["dispute_id"] for d in disputes] == [dispute_id]
    r = await api.ops_post(
        f"/v1/ops/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "the bill is theirs"}, headers=ALICE
    )
    assert r.status_code == 200, r.text
    done = await temporal_env.client.execute_workflow(
        CreditUpkeepWorkflow.run, k.CreditUpkeepInput(retention_days=1826), id=uid("credit-upkeep-"), task_queue=worker
    )
    ids = [first.json()["objection_id"], second.json()["objection_id"]]
    assert set(ids) <= set(done.done)
    told = {o["objection_id"]: o["answer"] for o in (await platform.get("_sandbox/objections")).json()}
    assert [told[i] for i in ids] == ["confirmed", "confirmed"]
