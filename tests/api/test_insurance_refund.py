"""Refunds of a card-less settlement's insurance parts (insurance_pooled, insurance_personal),
through the API, the worker and the simulated bureau: asked back whole, the bureau takes the
settlement back (2208) and the refunds succeed; asked back in part, they stay with an operator;
refused, they fail and the credit is back on the bill; the bureau away, they are retried.

What the ledger's refund plan (newest payment first) asks back in each case:
- every charge cancelled after the insurance paid: the whole insurance part (both parts);
- one exam cancelled: the newest payments first, the personal account then part of the pooled
  fund: a part, which stays manual (the drug cancelled after it: the rest, now the whole, and
  the 2208 settles the parts with an operator too; but once an operator confirmed the part
  handed back at the window, the rest stays manual: a 2208 would return that part twice);
- paid twice, the insurance landing after a channel paid the bill: the whole insurance part;
  paid twice, a channel paying after the insurance: the channel's payment, the bureau untouched."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from activities.insurance_refunds import BY_HAND, PARTIAL
from config import Settings
from db.models import AuditLog, LedgerEntry
from integrations.factory import Integrations, build_integrations
from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually
from tests.flows import Clinic, item
from tests.support import Simulators, uid

Fault = Callable[[httpx.Request], httpx.Response | None]


class BureauWire(httpx.AsyncBaseTransport):
    """The worker's and the API's way to the simulated bureau: `fault` answers a transaction in
    its place when it returns a response (the sandbox's inspection GETs pass)."""

    def __init__(self, bureau_app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=bureau_app)
        self.fault: Fault | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = self.fault(request) if self.fault and request.method == "POST" else None
        return answer if answer is not None else await self.inner.handle_async_request(request)


@pytest.fixture
def bureau_wire(simulators: Simulators) -> BureauWire:
    return BureauWire(simulators.bureau)


@pytest.fixture
async def integrations(
    settings: Settings, simulators: Simulators, bureau_wire: BureauWire
) -> AsyncIterator[Integrations]:
    async with AsyncExitStack() as stack:
        transports = dataclasses.replace(simulators.transports(), bureau=bureau_wire)
        yield build_integrations(settings, stack, transports=transports)


async def visit_of(clinic: Clinic, patient_id: str, fee: int) -> str:
    """Registration `fee` (not covered) + X-ray 12000 + a drug 3000 (covered: pooled 9000,
    personal 6000)."""
    visit_id = (await clinic.register(patient_id, fee=fee))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("xray", "exam", 12000)])
    await clinic.event(visit_id, "prescribed", items=[item("amox", "drug", 3000)], skin_test_required=False)
    await clinic.event(visit_id, "discharged")
    return visit_id


async def channel_order(api, auth: dict[str, str]) -> dict[str, Any]:
    r = await api.http.post(
        "/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, "Idempotency-Key": uid("pay-")}
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def complete(api, payment_id: str) -> None:
    r = await api.http.post(f"/v1/sandbox/payments/{payment_id}/complete")
    assert r.status_code == 200, r.text


class Case:
    """One patient's visit paid by card-less insurance (and its self-pay at the sandbox)."""

    def __init__(self, api, clinic: Clinic, factory) -> None:
        self.api, self.clinic, self.factory = api, clinic, factory

    async def start(self, fee: int) -> None:
        self.patient_id, phone = await self.clinic.enrolled_patient()
        self.visit_id = await visit_of(self.clinic, self.patient_id, fee)
        self.auth, _ = await sign_in(self.api, self.clinic, phone)

    async def insurance_pays(self) -> dict[str, Any] | None:
        """Pre-settle and pay: the settlement's id kept; the self-pay order (None: nothing self-pay)."""
        r = await self.api.http.post("/v1/patient/insurance/presettle", json={}, headers=self.auth)
        assert r.status_code == 201, r.text
        self.settlement_id = r.json()["settlement_id"]
        assert (r.json()["pooled_fen"], r.json()["personal_fen"]) == (9000, 6000)
        r = await self.api.http.post(
            f"/v1/patient/insurance/settlements/{self.settlement_id}/pay",
            json={"channel": "sandbox"},
            headers=self.auth,
        )
        assert r.status_code == 200, r.text
        return r.json()["self_pay"]

    async def settlement(self) -> dict[str, Any]:
        path = f"/v1/patient/insurance/settlements/{self.settlement_id}"
        return dict((await self.api.http.get(path, headers=self.auth)).json())

    async def settlement_is(self, *status: str) -> dict[str, Any]:
        """The settlement once in one of `status` (it may pass through one on its way)."""

        async def probe() -> dict[str, Any] | None:
            s = await self.settlement()
            return s if s["status"] in status else None

        return dict(await eventually(probe, tries=300))

    async def at_bureau(self) -> list[str]:
        return [
            s["status"]
            for s in (await self.api.http.get(f"/v1/sandbox/insurance-settlements/{self.patient_id}")).json()
        ]

    async def refunds(self) -> list[dict[str, Any]]:
        r = await self.api.http.get("/v1/ops/refunds", params={"patient_id": self.patient_id}, headers=self.api.ops)
        return list(r.json())

    async def refunds_settle(self, *final: str) -> list[dict[str, Any]]:
        """The patient's refunds once each is in one of `final`, insurance parts first, by method."""

        async def probe() -> list[dict[str, Any]] | None:
            found = await self.refunds()
            return found if found and all(r["status"] in final for r in found) else None

        found = await eventually(probe, tries=300)
        return sorted(found, key=lambda r: (not r["method"].startswith("insurance"), r["method"]))

    async def bill(self) -> dict[str, Any]:
        return dict((await self.api.his_get(f"/v1/his/visits/{self.visit_id}")).json()["bill"])

    async def audit(self, action: str, subject_id: str | None = None) -> list[AuditLog]:
        """`action`s audited of the patient (a settlement's) or of `subject_id` (a visit's refunds)."""
        async with self.factory() as session:
            rows = await session.scalars(
                select(AuditLog).where(
                    AuditLog.subject_id == (subject_id or self.patient_id), AuditLog.action == action
                )
            )
            return list(rows.all())


@pytest.fixture
def case(api, clinic: Clinic, factory) -> Case:
    return Case(api, clinic, factory)


def whole(refunds: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(r["method"], r["amount_fen"], r["status"]) for r in refunds if r["method"].startswith("insurance")]


async def assert_taken_back(case: Case) -> None:
    """The whole insurance part went back through the bureau: both parts succeeded (2208)."""
    done = await case.refunds_settle("succeeded", "failed", "manual")
    assert whole(done)[:2] == [("insurance_personal", 6000, "succeeded"), ("insurance_pooled", 9000, "succeeded")]
    settlement = await case.settlement_is("refunded")
    assert "2208" in settlement["detail"]
    assert await case.at_bureau() == ["reversed"]
    [audited] = await case.audit("insurance_refunded")
    assert audited.actor == "bureau" and audited.detail["settlement_id"] == case.settlement_id
    succeeded = [
        a for a in await case.audit("refund_succeeded", case.visit_id) if a.detail["amount_fen"] in (6000, 9000)
    ]
    assert sorted(a.actor for a in succeeded) == ["bureau", "bureau"]


async def test_every_charge_cancelled_sends_the_insurance_back_through_the_bureau(case: Case) -> None:
    await case.start(fee=0)
    assert await case.insurance_pays() is None  # all covered: nothing self-pay
    await case.settlement_is("completed")
    [receipt] = await eventually(lambda: receipts(case))
    assert receipt["paid_fen"] == 15000
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray", "amox"])
    await assert_taken_back(case)
    bill = await case.bill()
    assert (bill["total_fen"], bill["paid_fen"], bill["balance_fen"]) == (0, 0, 0)
    # the receipt of a visit refunded whole is voided and its e-bill written off (冲红), as after any refund
    [voided] = await eventually(lambda: receipts(case, voided=True, ebill="written_off"))
    assert voided["receipt_id"] == receipt["receipt_id"]


async def receipts(case: Case, *, voided: bool = False, ebill: str | None = None) -> list[dict[str, Any]]:
    """The patient's current (or voided) receipts; with `ebill`, only once each one's bill is so."""
    found = (await case.api.http.get("/v1/patient/receipts", headers=case.auth)).json()
    mine = [r for r in found if (r["voided_at"] is not None) == voided]
    if ebill is not None and not all(r["ebill"] and r["ebill"]["status"] == ebill for r in mine):
        return []
    return mine


async def test_one_exam_cancelled_stays_with_an_operator_and_the_bureau_keeps_the_settlement(case: Case) -> None:
    await case.start(fee=500)
    self_pay = await case.insurance_pays()
    assert self_pay is not None
    await complete(case.api, self_pay["payment_id"])
    await case.settlement_is("completed")
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray"])
    done = await case.refunds_settle("manual", "succeeded", "failed")
    # newest first: the personal account's 6000, then 6000 of the pooled fund's 9000: a part
    assert whole(done) == [("insurance_personal", 6000, "manual"), ("insurance_pooled", 6000, "manual")]
    assert all(r["detail"] == PARTIAL for r in done)
    assert (await case.settlement())["status"] == "completed"
    assert await case.at_bureau() == ["settled"]

    # the receipt shows the refund as any refund does: voided (its bill written off) and issued again
    async def second() -> list[dict[str, Any]]:
        current = await receipts(case, ebill="issued")
        return current if [r["version"] for r in current] == [2] else []

    assert [(r["version"], r["total_fen"]) for r in await eventually(second)] == [(2, 3500)]
    [old] = await eventually(lambda: receipts(case, voided=True, ebill="written_off"))
    assert old["version"] == 1


@pytest.mark.parametrize("channel_first", [True, False])
async def test_paid_twice(case: Case, channel_first: bool) -> None:
    """The bill paid at a channel and by insurance: whichever landed last comes back."""
    await case.start(fee=500)
    order = await channel_order(case.api, case.auth)  # the whole bill, 15500, at the sandbox
    assert order["amount_fen"] == 15500
    self_pay = await case.insurance_pays()
    assert self_pay is not None
    if channel_first:
        await complete(case.api, order["payment_id"])
    await complete(case.api, self_pay["payment_id"])
    await case.settlement_is("completed", "refunded")  # booked, then (channel first) taken back at once
    if channel_first:  # the self-pay part and then the insurance landed on a paid bill: both back
        await assert_taken_back(case)
        done = await case.refunds_settle("succeeded")
        assert [(r["payment_id"], r["amount_fen"]) for r in done if r["method"] == "sandbox"] == [
            (self_pay["payment_id"], 500)
        ]
    else:  # the channel paid a bill the insurance had paid: the channel's money comes back
        await complete(case.api, order["payment_id"])
        done = await case.refunds_settle("succeeded")
        assert [(r["method"], r["payment_id"], r["amount_fen"]) for r in done] == [
            ("sandbox", order["payment_id"], 15500)
        ]
        assert (await case.settlement())["status"] == "completed"
        assert await case.at_bureau() == ["settled"]
    bill = await case.bill()
    assert (bill["total_fen"], bill["paid_fen"], bill["balance_fen"]) == (15500, 15500, 0)


def refusal_of_2208(request: httpx.Request) -> httpx.Response | None:
    if json.loads(request.content)["infno"] == "2208":
        return httpx.Response(200, json={"infcode": -1, "err_msg": "[SettlementLocked] 已对账，不能撤销"})
    return None


async def test_a_refused_2208_fails_the_refunds_and_the_credit_is_back(case: Case, bureau_wire: BureauWire) -> None:
    await case.start(fee=0)
    await case.insurance_pays()
    await case.settlement_is("completed")
    bureau_wire.fault = refusal_of_2208
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray", "amox"])
    done = await case.refunds_settle("failed")
    assert whole(done) == [("insurance_personal", 6000, "failed"), ("insurance_pooled", 9000, "failed")]
    assert all("SettlementLocked" in r["detail"] and "对账" not in r["detail"] for r in done)
    settlement = await case.settlement()
    assert settlement["status"] == "completed" and "SettlementLocked" in settlement["detail"]
    assert await case.at_bureau() == ["settled"]
    [refused] = await case.audit("insurance_refund_refused")
    assert refused.detail["code"] == "SettlementLocked"
    # the ledger put the credit back: 15000 to return again once resolved
    assert (await case.bill())["balance_fen"] == -15000
    async with case.factory() as session:
        reversals = await session.scalars(
            select(LedgerEntry).where(LedgerEntry.visit_id == case.visit_id, LedgerEntry.kind == "refund_reversal")
        )
        assert sorted(e.amount_fen for e in reversals) == [6000, 9000]


async def test_the_bureau_away_is_retried(case: Case, bureau_wire: BureauWire) -> None:
    await case.start(fee=0)
    await case.insurance_pays()
    await case.settlement_is("completed")
    down = {"left": 2}

    def away(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["infno"] == "2208" and down["left"] > 0:
            down["left"] -= 1
            return httpx.Response(503, text="busy")
        return None

    bureau_wire.fault = away
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray", "amox"])
    await assert_taken_back(case)
    assert down["left"] == 0


async def test_a_part_then_the_rest_goes_back_whole_and_the_parts_with_an_operator_succeed(case: Case) -> None:
    await case.start(fee=500)
    self_pay = await case.insurance_pays()
    assert self_pay is not None
    await complete(case.api, self_pay["payment_id"])
    await case.settlement_is("completed")
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray"])
    assert [r["status"] for r in await case.refunds_settle("manual")] == ["manual", "manual"]
    # the drug too: the refunds now ask back the whole insurance part, and the bureau takes it back
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["amox"])
    done = await case.refunds_settle("succeeded", "failed")
    assert sorted((r["method"], r["amount_fen"], r["status"]) for r in done) == [
        ("insurance_personal", 6000, "succeeded"),
        ("insurance_pooled", 3000, "succeeded"),
        ("insurance_pooled", 6000, "succeeded"),
    ]
    assert (await case.settlement_is("refunded"))["status"] == "refunded"
    assert await case.at_bureau() == ["reversed"]
    bill = await case.bill()
    assert (bill["total_fen"], bill["paid_fen"], bill["balance_fen"]) == (500, 500, 0)


async def test_a_part_handed_back_by_an_operator_keeps_the_rest_manual_and_no_2208(
    case: Case, bureau_wire: BureauWire
) -> None:
    """Part A confirmed at the window by an operator (revoked and re-settled there), part B asked
    back after it: the open refunds would make the whole, but a 2208 would give A back twice."""
    sent: list[str] = []

    def record(request: httpx.Request) -> httpx.Response | None:
        sent.append(json.loads(request.content)["infno"])
        return None

    bureau_wire.fault = record
    await case.start(fee=500)
    self_pay = await case.insurance_pays()
    assert self_pay is not None
    await complete(case.api, self_pay["payment_id"])
    await case.settlement_is("completed")
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["xray"])
    part_a = await case.refunds_settle("manual")
    assert whole(part_a) == [("insurance_personal", 6000, "manual"), ("insurance_pooled", 6000, "manual")]
    for refund in part_a:
        r = await case.api.ops_post(f"/v1/ops/refunds/{refund['refund_id']}/complete", {})
        assert r.status_code == 200, r.text
    await case.clinic.event(case.visit_id, "orders_cancelled", item_ids=["amox"])

    async def part_b() -> list[dict[str, Any]] | None:
        found = [r for r in await case.refunds() if r["refund_id"] not in {a["refund_id"] for a in part_a}]
        return found if found and all(r["status"] != "created" and r["status"] != "processing" for r in found) else None

    [rest] = await eventually(part_b, tries=300)
    assert (rest["method"], rest["amount_fen"], rest["status"], rest["detail"]) == (
        "insurance_pooled",
        3000,
        "manual",
        BY_HAND,
    )
    assert sorted(r["status"] for r in await case.refunds()) == ["manual", "succeeded", "succeeded"]
    assert "2208" not in sent
    assert (await case.settlement())["status"] == "completed"
    assert await case.at_bureau() == ["settled"]
    assert await case.audit("insurance_refunded") == []
