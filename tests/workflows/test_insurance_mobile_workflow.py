"""MobileInsurancePaymentWorkflow and the reconciliation on the real dev server, with the API, the
worker and the simulated bureau: an order left paying without its workflow (the API died between
its commit and the start) is asked about (6301) and booked or taken back (6401) by the next
reconciliation, which leaves a running workflow alone; a 6301 of another split books nothing;
a refund of each part goes back by 6203."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.insurance_mobile import MISMATCH_HOLD, refund_answer, refund_mobile
from config import Settings
from db.models import InsuranceSettlement, Payment, Refund
from integrations.factory import Integrations
from integrations.insurance_bureau import WORKER
from integrations.nhsa_mobile import MobilePayment, MobileRefund
from tests.api.test_insurance_mobile import (
    ToApi,
    bureau,
    ordered,
    paid_methods,
    pay,
    settlement_row,
    status_of,
)
from tests.api.test_refunds import eventually
from tests.flows import Clinic
from tests.support import Simulators, card_events, credit_records, now, rows, sandbox_settings, uid
from tests.workflows.test_visit_workflow import record, sms
from workflows import contracts as c, contracts_mobile as m
from workflows.insurance_mobile import MobileInsurancePaymentWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.visit import VisitWorkflow

Factory = async_sessionmaker[AsyncSession]
BOOKED = {"nhsa_mobile": 500, "insurance_pooled": 9000, "insurance_personal": 6000}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return sandbox_settings(database_url, insurance_self_pay_timeout=timedelta(seconds=2))


@pytest.fixture
def clinic(api) -> Clinic:
    return Clinic.over(api.http, api.his)


@pytest.fixture
def platform(api, simulators: Simulators) -> ToApi:
    to_api = ToApi(api.http)
    simulators.bureau.state.notify_transport = to_api
    return to_api


async def orphaned(
    api, clinic: Clinic, temporal_env: WorkflowEnvironment
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A paid order (6202) whose workflow is gone: terminated, as if it never started."""
    _, visit_id, auth, order = await ordered(api, clinic)
    paying = await pay(api, auth, order["settlement_id"])
    await temporal_env.client.get_workflow_handle(m.mobile_workflow_id(order["settlement_id"])).terminate("crash")
    return visit_id, auth, paying


async def reconcile(temporal_env: WorkflowEnvironment, queue: str, history: str = "") -> c.ReconcileResult:
    """A reconciliation run to its end (`history`: kept for the replay tests under that name)."""
    handle = await temporal_env.client.start_workflow(
        ReconcileWorkflow.run, c.ReconcileInput(older_than_seconds=3600), id=uid("reconcile-"), task_queue=queue
    )
    result = await handle.result()
    if history:
        await record(handle, history)
    return result


async def test_the_reconciliation_books_or_takes_back_orders_left_paying_and_leaves_running_ones(
    api, clinic: Clinic, temporal_env: WorkflowEnvironment, simulators: Simulators, worker: str, factory: Factory
) -> None:
    paid_visit, auth, paid = await orphaned(api, clinic, temporal_env)
    db = await settlement_row(simulators, paid)
    cashier = await bureau(simulators, "POST", paid["cashier_url"] + "?notify=0", json={"payToken": db["payToken"]})
    assert cashier.status_code == 200  # paid at the cashier, and the notification lost
    unpaid_visit, _, unpaid = await orphaned(api, clinic, temporal_env)
    await asyncio.sleep(2.5)  # past the deadline (2 s)
    await reconcile(temporal_env, worker, "reconcile_starts_mobile_orders")
    for settlement in (paid, unpaid):
        handle = temporal_env.client.get_workflow_handle(
            m.mobile_workflow_id(settlement["settlement_id"]), result_type=c.SettlementResult
        )
        await handle.result()
    assert (await status_of(api, auth, paid["settlement_id"], "completed")) is not None
    assert await paid_methods(api, paid_visit) == BOOKED
    assert (await settlement_row(simulators, unpaid))["ordStas"] == "12"
    assert await paid_methods(api, unpaid_visit) == {}
    [row] = await rows(factory, InsuranceSettlement, id=unpaid["settlement_id"])
    assert row.status == "revoked"


async def test_a_running_workflow_is_left_alone(
    api, clinic: Clinic, temporal_env: WorkflowEnvironment, worker: str, factory: Factory
) -> None:
    _, auth, paying = await orphaned(api, clinic, temporal_env)
    settlement_id = paying["settlement_id"]
    with temporal_env.with_time_skipping_disabled():  # its hour-long deadline stays an hour
        own = await temporal_env.client.start_workflow(
            MobileInsurancePaymentWorkflow.run,
            m.MobilePaymentInput(
                settlement_id=settlement_id, fund_fen=9000, personal_fen=6000, cash_fen=500, timeout_seconds=3600
            ),
            id=m.mobile_workflow_id(settlement_id),
            task_queue=worker,
        )
    await asyncio.sleep(2.5)
    await reconcile(temporal_env, worker)
    described = await temporal_env.client.get_workflow_handle(m.mobile_workflow_id(settlement_id)).describe()
    assert (described.run_id, described.status) == (own.result_run_id, WorkflowExecutionStatus.RUNNING)
    assert await status_of(api, auth, settlement_id, "paying") is not None
    await own.terminate("test over")
    await nothing_left_paying(factory, settlement_id)


async def nothing_left_paying(factory: Factory, settlement_id: str) -> None:
    """No order left paying for other tests' reconciliations (the database is the session's)."""
    async with factory() as session, session.begin():
        await session.execute(
            update(InsuranceSettlement).where(InsuranceSettlement.id == settlement_id).values(status="failed")
        )


async def test_a_6301_of_another_split_books_nothing(
    api,
    clinic: Clinic,
    temporal_env: WorkflowEnvironment,
    simulators: Simulators,
    factory: Factory,
    platform: ToApi,
) -> None:
    visit_id, _, paying = await pay_with_stored_split_changed(api, clinic, factory)
    db = await settlement_row(simulators, paying)
    await bureau(simulators, "POST", paying["cashier_url"], json={"payToken": db["payToken"]})
    handle = temporal_env.client.get_workflow_handle(m.mobile_workflow_id(paying["settlement_id"]))

    async def alert() -> str:
        return str(await handle.query(MobileInsurancePaymentWorkflow.alert))

    assert "not the ordered split" in await eventually(alert, tries=100)  # at once, in Temporal UI too
    [row] = await rows(factory, InsuranceSettlement, id=paying["settlement_id"])
    assert row.status == "paying" and "not the ordered split" in (row.detail or "")
    assert await paid_methods(api, visit_id) == {}
    # the patient paid the bureau: the visit is on an operator's hold (no reminder, lock or report),
    # audited with the settlement as its actor, shown in the ops views
    patient_id = await held_by(api, visit_id, row.id)
    scraped = (await api.http.get("/metrics")).text  # an alert for the operators: at least this one
    [held] = [line for line in scraped.splitlines() if line.startswith("yhf_mobile_orders_held ")]
    assert float(held.split()[1]) >= 1
    visit = temporal_env.client.get_workflow_handle(c.workflow_id(visit_id))
    await temporal_env.fast_forward(visit, timedelta(days=10))  # past the default (7 days): nothing imposed
    state = await visit.query(VisitWorkflow.state)
    assert state.payment_status != "defaulted" and not state.card_locked and not state.credit_reported
    assert await card_events(simulators, patient_id) == []
    assert await credit_records(simulators, visit_id) == []
    assert "pre_default" not in [s.template for s in await sms(factory, visit_id)]
    asked = await asks(handle)
    # told again (the platform's notification once more): asked again, still refused, nothing booked
    await bureau(simulators, "POST", f"/inspect/mobile/{db['payOrdId']}/notify")
    await eventually(lambda: _more(handle, asked))
    assert "not the ordered split" in await eventually(alert, tries=100)  # raised again once it failed again
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await paid_methods(api, visit_id) == {}
    await held_by(api, visit_id, row.id)  # held once: asked again, the hold is not put on twice
    await record(handle, "insurance_mobile_split_mismatch_held")
    await handle.terminate("test over")
    await nothing_left_paying(factory, row.id)


async def held_by(api, visit_id: str, settlement_id: str) -> str:
    """The visit is on an operator's hold for the mismatch, put on once by the settlement; its patient."""
    seen = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert (seen["hold"]["kind"], seen["hold"]["reason"]) == ("operator", MISMATCH_HOLD)
    listed = (await api.http.get(f"/v1/ops/visits?patient_id={seen['patient_id']}", headers=api.ops)).json()
    assert [v["hold"]["reason"] for v in listed if v["visit_id"] == visit_id] == [MISMATCH_HOLD]
    trail = await api.http.get(f"/v1/ops/audit?subject_type=visit&subject_id={visit_id}", headers=api.ops)
    paused = [(e["actor"], e["reason"]) for e in trail.json() if e["action"] == "pause_sanctions"]
    assert paused == [(f"settlement {settlement_id}", MISMATCH_HOLD)]
    return str(seen["patient_id"])


async def asks(handle: Any) -> int:
    """How many times the workflow asked the bureau about the order (6301 steps scheduled)."""
    history = await handle.fetch_history()
    return sum(
        1
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == m.SETTLE_MOBILE_ORDER
    )


async def _more(handle: Any, than: int) -> bool:
    return await asks(handle) > than


async def pay_with_stored_split_changed(
    api, clinic: Clinic, factory: Factory
) -> tuple[str, dict[str, str], dict[str, Any]]:
    _, visit_id, auth, order = await ordered(api, clinic)
    async with factory() as session, session.begin():  # our record of the split differs from the bureau's
        await session.execute(
            update(InsuranceSettlement)
            .where(InsuranceSettlement.id == order["settlement_id"])
            .values(pooled_fen=8999, personal_fen=6001)
        )
    return visit_id, auth, await pay(api, auth, order["settlement_id"])


async def test_refund_mobile_sends_each_part_back_by_6203(
    api,
    clinic: Clinic,
    simulators: Simulators,
    factory: Factory,
    integrations: Integrations,
    platform: ToApi,
) -> None:
    _, visit_id, auth, order = await ordered(api, clinic)
    paying = await pay(api, auth, order["settlement_id"])
    db = await settlement_row(simulators, paying)
    await bureau(simulators, "POST", paying["cashier_url"], json={"payToken": db["payToken"]})
    await eventually(lambda: status_of(api, auth, paying["settlement_id"], "completed"), tries=200)
    [settlement] = await rows(factory, InsuranceSettlement, id=paying["settlement_id"])
    payments = {p.method: p for p in await rows(factory, Payment, insurance_settlement_id=settlement.id)}
    assert {k: p.amount_fen for k, p in payments.items()} == BOOKED

    def refund(method: str, fen: int) -> Refund:
        p = payments[method]
        return Refund(
            id=uid("rf_"),
            payment_id=p.id,
            patient_id=p.patient_id,
            visit_id=visit_id,
            method=method,
            amount_fen=fen,
            created_at=now(),
        )

    cash = refund("nhsa_mobile", 500)
    answer = await refund_mobile(factory, integrations.bureau, cash, payments["nhsa_mobile"], settlement)
    assert (answer.status, answer.amount_fen, answer.out_refund_no) == ("succeeded", 500, cash.id)
    # the same refund again, a second later: the same request (its msgid kept, its appRefdTime the
    # refund's), which the bureau answers as the first time and pays back once
    await asyncio.sleep(1.1)
    again = await refund_mobile(factory, integrations.bureau, cash, payments["nhsa_mobile"], settlement)
    assert again.status == "succeeded"
    more = await refund_mobile(
        factory, integrations.bureau, refund("nhsa_mobile", 1), payments["nhsa_mobile"], settlement
    )
    assert more.status == "failed" and "6203" in more.detail  # nothing of the cash part is left to refund
    for method, fen in (("insurance_pooled", 9000), ("insurance_personal", 6000)):
        done = await refund_mobile(factory, integrations.bureau, refund(method, fen), payments[method], settlement)
        assert done.status == "succeeded", done.detail
    assert (await settlement_row(simulators, paying))["ordStas"] == "7"  # all of it refunded


def _answer(**kw: Any) -> MobileRefund:
    said: dict[str, Any] = {"pay_ord_id": "PO1", "app_refd_sn": "rf_1", "ref_status": "SUCC", "status": "6"}
    return MobileRefund(**(said | {"total_fen": 500, "fund_fen": 0, "personal_fen": 0, "cash_fen": 500} | kw))


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (_answer(), "succeeded"),
        (_answer(total_fen=None, fund_fen=None, personal_fen=None, cash_fen=None), "succeeded"),  # none named
        (_answer(ref_status="FAIL"), "failed"),
        (_answer(ref_status="WAIT"), "processing"),
        (_answer(cash_fen=400, total_fen=400), "refund_mismatch"),
        (_answer(fund_fen=500, cash_fen=0), "refund_mismatch"),
        (_answer(total_fen=600), "refund_mismatch"),
        (_answer(app_refd_sn="rf_2"), "refund_mismatch"),
    ],
)
def test_the_6203_answer_is_checked(answer: MobileRefund, status: str) -> None:
    """SUCC for our appRefdSn with the amounts asked: succeeded; another appRefdSn or other amounts:
    refund_mismatch (non-retryable, for a person); FAIL failed; anything else still processing."""
    refund = Refund(id="rf_1", payment_id="p", patient_id="P", visit_id="V", method="nhsa_mobile", amount_fen=500)
    asked = {"fund_fen": 0, "personal_fen": 0, "cash_fen": 500}
    try:
        got = refund_answer(refund, answer, asked)
    except ApplicationError as err:
        assert (err.type, err.non_retryable, status) == ("refund_mismatch", True, "refund_mismatch")
        return
    assert got.status == status
    if status == "succeeded":
        assert (got.amount_fen, got.out_refund_no) == (500, "rf_1")


async def test_an_order_refunded_at_the_bureau_before_it_was_booked_is_held_for_a_person(
    api,
    clinic: Clinic,
    temporal_env: WorkflowEnvironment,
    simulators: Simulators,
    worker: str,
    factory: Factory,
    integrations: Integrations,
) -> None:
    """6301 says refunded (7) of an order we never booked: not paid, not unpaid, nothing to take
    back (6401 would be refused without end). The step fails at once, the alert is raised, the
    visit put on an operator's hold, and nothing is asked again until someone signals."""
    visit_id, _, paying = await orphaned(api, clinic, temporal_env)
    db = await settlement_row(simulators, paying)
    await bureau(simulators, "POST", paying["cashier_url"] + "?notify=0", json={"payToken": db["payToken"]})
    bureau_client = integrations.bureau
    answer = await MobilePayment(bureau_client).refund(
        msgid=bureau_client.msgid(now(), secrets.randbelow(8999)),
        pay_ord_id=db["payOrdId"],
        app_refd_sn=uid("rf_"),
        fund_fen=9000,
        personal_fen=6000,
        cash_fen=500,
        at=now(),
        operator=WORKER,
        day=bureau_client.local_day(now()),
    )
    assert (answer.ref_status, answer.status) == ("SUCC", "7")
    with temporal_env.with_time_skipping_disabled():
        handle = await temporal_env.client.start_workflow(
            MobileInsurancePaymentWorkflow.run,
            m.MobilePaymentInput(
                settlement_id=paying["settlement_id"],
                fund_fen=9000,
                personal_fen=6000,
                cash_fen=500,
                timeout_seconds=3600,
            ),
            id=m.mobile_workflow_id(paying["settlement_id"]),
            task_queue=worker,
        )
    alert = await eventually(lambda: handle.query(MobileInsurancePaymentWorkflow.alert), tries=100)
    assert "as 7 (ordStas)" in alert
    seen = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert seen["hold"]["reason"] == "the bureau has the order as 7 (ordStas): reconcile by hand"
    await asyncio.sleep(1)
    assert await asks(handle) == 1  # failed at once, not retried
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    [row] = await rows(factory, InsuranceSettlement, id=paying["settlement_id"])
    assert row.status == "paying" and "as 7 (ordStas)" in (row.detail or "")
    assert await paid_methods(api, visit_id) == {}
    await handle.terminate("test over")
    await nothing_left_paying(factory, row.id)
