"""医保移动支付 through the API, the worker and the simulated bureau: the patient's authorisation,
the bureau's order (6201) and its split, paying it (6202) with the cash part at the platform's
cashier, the signed notification waking the workflow, which books only what 6301 says."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest

from activities.insurance_mobile import MobileActivities
from config import Settings
from db.models import InsuranceSettlement
from integrations.factory import Integrations, build_integrations
from tests.api.test_insurance import drug_and_exam_visit
from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually, refunds
from tests.flows import Clinic, assert_problem, item
from tests.support import Simulators, sandbox_settings, uid
from tests.workflows.test_visit_workflow import record
from workflows import contracts as c, contracts_mobile as m

ORDERS = "/v1/patient/insurance/mobile-orders"
NOTIFY = "/v1/payments/notify/nhsa-mobile"
BOOKED = {"nhsa_mobile": 500, "insurance_pooled": 9000, "insurance_personal": 6000}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return sandbox_settings(database_url, insurance_self_pay_timeout=timedelta(seconds=3))


class Losing(httpx.AsyncBaseTransport):
    """The simulated bureau; the answer to the transactions in `lose` is lost once (after the
    bureau acted on the request)."""

    def __init__(self, bureau_app: Any) -> None:
        self.inner = httpx.ASGITransport(app=bureau_app)
        self.lose: set[str] = set()
        self.stale: set[str] = set()  # refused once as stale, never reaching the bureau

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        infno = json.loads(content).get("infno") if content.startswith(b"{") else None
        if infno in self.stale:
            self.stale.discard(infno)
            refusal = {"infcode": -1, "err_msg": "[StaleRequest] the timestamp is stale"}
            return httpx.Response(400, json=refusal, request=request)
        response = await self.inner.handle_async_request(request)
        if infno in self.lose:
            self.lose.discard(infno)
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@pytest.fixture
def transport(simulators: Simulators) -> Losing:
    return Losing(simulators.bureau)


@pytest.fixture
async def integrations(settings: Settings, simulators: Simulators, transport: Losing) -> AsyncIterator[Integrations]:
    """The API's and the worker's clients reach this test's bureau through `transport`."""
    async with AsyncExitStack() as stack:
        yield build_integrations(
            settings, stack, transports=dataclasses.replace(simulators.transports(), bureau=transport)
        )


class ToApi(httpx.AsyncBaseTransport):
    """The platform's notifications, delivered to this test's API (in-process)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = {k: v for k, v in request.headers.items() if k.startswith("x-tif-") or k == "content-type"}
        answer = await self.http.post(request.url.path, content=body, headers=headers)
        self.answers.append(answer.status_code)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


@pytest.fixture
def platform(api, simulators: Simulators) -> ToApi:
    to_api = ToApi(api.http)
    simulators.bureau.state.notify_transport = to_api
    return to_api


async def bureau(simulators: Simulators, method: str, url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulators.bureau), base_url="http://b") as http:
        return await http.request(method, url, **kw)


async def authorised(api, clinic: Clinic, *, fee: int = 500) -> tuple[str, str, dict[str, str], str]:
    """An insured patient with a discharged visit, signed in, and a payAuthNo from the e-voucher app."""
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await drug_and_exam_visit(clinic, patient_id) if fee else await covered_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post("/v1/sandbox/insurance/pay-auth", headers=auth)
    assert r.status_code == 200, r.text
    return patient_id, visit_id, auth, r.json()["pay_auth_no"]


async def covered_visit(clinic: Clinic, patient_id: str) -> str:
    """No registration fee, a covered X-ray 12000: the fund and the personal account pay it all."""
    visit_id = (await clinic.register(patient_id, fee=0))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("xray", "exam", 12000)])
    await clinic.event(visit_id, "consultation_ended")
    await clinic.event(visit_id, "discharged")
    return visit_id


async def ordered(api, clinic: Clinic, *, fee: int = 500) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    patient_id, visit_id, auth, pay_auth_no = await authorised(api, clinic, fee=fee)
    r = await api.http.post(ORDERS, json={"pay_auth_no": pay_auth_no}, headers=auth)
    assert r.status_code == 201, r.text
    return patient_id, visit_id, auth, r.json()


async def pay(api, auth: dict[str, str], settlement_id: str) -> dict[str, Any]:
    r = await api.http.post(
        f"/v1/patient/insurance/settlements/{settlement_id}/pay", json={"channel": "nhsa_mobile"}, headers=auth
    )
    assert r.status_code == 200, r.text
    return r.json()


async def status_of(api, auth: dict[str, str], settlement_id: str, wanted: str) -> dict[str, Any] | None:
    got = (await api.http.get(f"/v1/patient/insurance/settlements/{settlement_id}", headers=auth)).json()
    return got if got["status"] == wanted else None


async def paid_methods(api, visit_id: str) -> dict[str, int]:
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    return {p["method"]: p["amount_fen"] for p in visit["bill"]["payments"] if p["kind"] == "payment"}


async def pay_order(api, clinic: Clinic, **kw: Any) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    patient_id, visit_id, auth, order = await ordered(api, clinic, **kw)
    return patient_id, visit_id, auth, await pay(api, auth, order["settlement_id"])


async def test_mobile_payment_orders_pays_at_the_cashier_and_books_the_three_parts(
    api, clinic: Clinic, temporal_env, simulators: Simulators, platform: ToApi
) -> None:
    _, visit_id, auth, pay_auth_no = await authorised(api, clinic)
    options = (await api.http.get("/v1/patient/payment-options", headers=auth)).json()
    assert options["insurance_mobile"] is True
    key = {"Idempotency-Key": uid("mob-")}
    r = await api.http.post(ORDERS, json={"pay_auth_no": pay_auth_no}, headers={**auth, **key})
    assert r.status_code == 201, r.text
    order = r.json()
    again = await api.http.post(ORDERS, json={"pay_auth_no": pay_auth_no}, headers={**auth, **key})
    assert (again.status_code, again.json()) == (201, order)  # the same answer, no second order
    assert (order["mode"], order["status"], order["visit_ids"]) == ("mobile", "presettled", [visit_id])
    # the bureau's split: the fund 60% of the covered 15000, the personal account the rest, the fee cash
    assert (order["total_fen"], order["pooled_fen"], order["personal_fen"], order["self_pay_fen"]) == (
        15500,
        9000,
        6000,
        500,
    )
    path = f"/v1/patient/insurance/settlements/{order['settlement_id']}/pay"
    assert_problem(await api.http.post(path, json={"channel": "sandbox"}, headers=auth), 409, "settlement_mode")
    paying = await pay(api, auth, order["settlement_id"])
    assert paying["status"] == "paying" and paying["cashier_url"].endswith(order_path(paying))
    assert_problem(await api.http.post(path, json={"channel": "nhsa_mobile"}, headers=auth), 409, "settlement_used")
    # nothing is booked until the platform says the cash part is paid (and 6301 confirms it)
    assert await paid_methods(api, visit_id) == {}
    db = await settlement_row(simulators, paying)
    cashier = await bureau(simulators, "POST", paying["cashier_url"], json={"payToken": db["payToken"]})
    assert cashier.status_code == 200, cashier.text
    assert platform.answers == [200]  # the notification reached us and was taken
    done = await eventually(lambda: status_of(api, auth, order["settlement_id"], "completed"), tries=200)
    assert done["self_pay_fen"] == 500
    assert await paid_methods(api, visit_id) == BOOKED
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert visit["bill"]["balance_fen"] == 0
    await eventually(lambda: _settled(api, visit_id))
    # told again: harmless, nothing booked twice
    assert (await bureau(simulators, "POST", f"/inspect/mobile/{db['payOrdId']}/notify")).json()["notified"] == "200"
    saga = temporal_env.client.get_workflow_handle(m.mobile_workflow_id(order["settlement_id"]))
    assert (await saga.result())["status"] == "completed"
    assert await paid_methods(api, visit_id) == BOOKED
    await record(saga, "insurance_mobile_completed")
    # the receipt names the three parts (the e-bill: the cash part ownPay, the others fund and account)
    [receipt] = await eventually(lambda: _receipts(api, auth))
    assert {p["method"]: p["amount_fen"] for p in receipt["payments"]} == BOOKED


async def _receipts(api, auth: dict[str, str]) -> list[dict[str, Any]]:
    return (await api.http.get("/v1/patient/receipts", headers=auth)).json()


def order_path(paying: dict[str, Any]) -> str:
    return "/mobile/cashier/" + paying["cashier_url"].rsplit("/", 1)[-1]


async def settlement_row(simulators: Simulators, paying: dict[str, Any]) -> dict[str, Any]:
    """The simulated bureau's order (its payOrdId is the cashier URL's last part)."""
    r = await bureau(simulators, "GET", f"/inspect/mobile/{paying['cashier_url'].rsplit('/', 1)[-1]}")
    assert r.status_code == 200, r.text
    return r.json()


async def _settled(api, visit_id: str) -> bool:
    return (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["payment_status"] == "settled"


async def test_no_cash_part_is_paid_at_once(
    api, clinic: Clinic, platform: ToApi, factory, integrations: Integrations, settings: Settings
) -> None:
    _, visit_id, auth, paying = await pay_order(api, clinic, fee=0)
    assert (paying["pooled_fen"], paying["personal_fen"], paying["self_pay_fen"]) == (7200, 4800, 0)
    assert paying["cashier_url"] is None
    await eventually(lambda: status_of(api, auth, paying["settlement_id"], "completed"), tries=200)
    assert await paid_methods(api, visit_id) == {"insurance_pooled": 7200, "insurance_personal": 4800}
    # a retried booking (its first try committed, its answer lost) books nothing again, and answers
    # where the parts landed as the first try did (the visits are told)
    acts = MobileActivities(factory, integrations.bureau, settings.insurance_self_pay_timeout)
    again = await acts.settle_mobile_order(c.SettlementInput(settlement_id=paying["settlement_id"]))
    booked_again = await acts._book(paying["settlement_id"], "SE-again")
    parts = [
        c.AllocationResult(visit_id=visit_id, amount_fen=7200),
        c.AllocationResult(visit_id=visit_id, amount_fen=4800),
    ]
    assert (again.status, again.landed, again.refunds) == ("completed", parts, [])
    assert (booked_again.status, booked_again.landed) == ("completed", parts)
    assert await paid_methods(api, visit_id) == {"insurance_pooled": 7200, "insurance_personal": 4800}


async def test_a_lost_notification_is_found_by_the_deadlines_query(
    api, clinic: Clinic, simulators: Simulators, platform: ToApi
) -> None:
    _, visit_id, auth, paying = await pay_order(api, clinic)
    db = await settlement_row(simulators, paying)
    lost = await bureau(simulators, "POST", paying["cashier_url"] + "?notify=0", json={"payToken": db["payToken"]})
    assert lost.status_code == 200 and platform.answers == []
    # at the deadline 6401 is refused (paid), 6301 says paid: booked all the same
    await eventually(lambda: status_of(api, auth, paying["settlement_id"], "completed"), tries=300)
    assert await paid_methods(api, visit_id) == BOOKED


async def test_an_unpaid_order_is_taken_back_at_the_deadline(
    api, clinic: Clinic, simulators: Simulators, temporal_env
) -> None:
    _, visit_id, auth, paying = await pay_order(api, clinic)
    done = await eventually(lambda: status_of(api, auth, paying["settlement_id"], "revoked"), tries=300)
    assert "6401" in done["detail"]
    assert (await settlement_row(simulators, paying))["ordStas"] == "12"
    assert await paid_methods(api, visit_id) == {}
    db = await settlement_row(simulators, paying)
    late = await bureau(simulators, "POST", paying["cashier_url"], json={"payToken": db["payToken"]})
    assert late.status_code == 409  # taken back: the cashier no longer takes it
    saga = temporal_env.client.get_workflow_handle(m.mobile_workflow_id(paying["settlement_id"]))
    assert (await saga.result())["status"] == "revoked"
    await record(saga, "insurance_mobile_revoked")


async def test_a_forged_or_tampered_notification_changes_nothing(
    api, clinic: Clinic, simulators: Simulators, platform: ToApi
) -> None:
    _, visit_id, auth, paying = await pay_order(api, clinic)
    db = await settlement_row(simulators, paying)
    body = {
        "payOrdId": db["payOrdId"],
        "medOrgOrd": paying["settlement_id"],
        "ordStas": "6",
        "setlId": "SE-forged",
        "feeSumamt": 155.00,
        "fundPay": 90.00,
        "psnAcctPay": 60.00,
        "ownPayAmt": 5.00,
        "notifyTime": "20261130120000",
    }
    raw = json.dumps(body).encode()
    assert_problem(await api.http.post(NOTIFY, content=raw), 401, "missing_signature")
    forged = {
        "x-tif-paasid": "platform",
        "x-tif-timestamp": "1700000000",
        "x-tif-nonce": "abc",
        "x-tif-signature": "00" * 64,
    }
    r = await api.http.post(NOTIFY, content=raw, headers=forged)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json"), r.text
    # a genuine notification's signature over another body
    await bureau(simulators, "POST", paying["cashier_url"] + "?notify=0", json={"payToken": db["payToken"]})
    captured = Capture()
    simulators.bureau.state.notify_transport = captured
    await bureau(simulators, "POST", f"/inspect/mobile/{db['payOrdId']}/notify")
    headers, genuine = captured.requests[0]
    tampered = genuine.replace(b'"ownPayAmt": 5.00', b'"ownPayAmt": 0.05')
    assert tampered != genuine
    assert_problem(await api.http.post(NOTIFY, content=tampered, headers=headers), 401, "invalid_signature")
    status = (await api.http.get(f"/v1/patient/insurance/settlements/{paying['settlement_id']}", headers=auth)).json()
    assert status["status"] == "paying" and await paid_methods(api, visit_id) == {}
    # the genuine one is taken
    r = await api.http.post(NOTIFY, content=genuine, headers=headers)
    assert (r.status_code, r.json()) == (200, {"code": "SUCCESS"})
    await eventually(lambda: status_of(api, auth, paying["settlement_id"], "completed"), tries=200)


async def test_a_failed_cash_payment_fails_the_settlement(
    api, clinic: Clinic, simulators: Simulators, platform: ToApi
) -> None:
    _, visit_id, auth, paying = await pay_order(api, clinic)
    db = await settlement_row(simulators, paying)
    failed = await bureau(simulators, "POST", f"/inspect/mobile/{db['payOrdId']}/fail")
    assert failed.status_code == 200 and platform.answers == [200]
    done = await eventually(lambda: status_of(api, auth, paying["settlement_id"], "failed"), tries=200)
    assert "15" in done["detail"]
    assert await paid_methods(api, visit_id) == {}


class Capture(httpx.AsyncBaseTransport):
    """Keeps the platform's notifications instead of delivering them."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.startswith("x-tif-")}
        self.requests.append((headers, await request.aread()))
        return httpx.Response(200, json={"code": "SUCCESS"})


async def test_refusals(api, clinic: Clinic, simulators: Simulators) -> None:
    _, visit_id, auth, order = await ordered(api, clinic)
    # the payAuthNo is bound to that order: another order with it is refused
    pay_auth_no = (await api.http.post("/v1/sandbox/insurance/pay-auth", headers=auth)).json()["pay_auth_no"]
    assert_problem(
        await api.http.post(ORDERS, json={"pay_auth_no": "AUTH-not-issued"}, headers=auth), 409, "pay_auth_refused"
    )
    # the bill changes after the order: paying it is refused
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    path = f"/v1/patient/insurance/settlements/{order['settlement_id']}/pay"
    assert_problem(await api.http.post(path, json={"channel": "nhsa_mobile"}, headers=auth), 409, "bill_changed")
    fresh = await api.http.post(ORDERS, json={"pay_auth_no": pay_auth_no}, headers=auth)
    assert fresh.status_code == 201 and fresh.json()["total_fen"] == 3500, fresh.text
    # a card-less settlement is not paid with nhsa_mobile
    card = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert card.status_code == 201, card.text
    card_pay = f"/v1/patient/insurance/settlements/{card.json()['settlement_id']}/pay"
    assert_problem(await api.http.post(card_pay, json={"channel": "nhsa_mobile"}, headers=auth), 409, "settlement_mode")


async def test_a_lost_answer_to_6202_is_answered_502_and_the_workflow_finds_the_payment(
    api, clinic: Clinic, transport: Losing
) -> None:
    _, visit_id, auth, order = await ordered(api, clinic, fee=0)  # no cash part: 6202 pays it all
    transport.lose.add("6202")
    path = f"/v1/patient/insurance/settlements/{order['settlement_id']}/pay"
    r = await api.http.post(path, json={"channel": "nhsa_mobile"}, headers=auth)
    assert_problem(r, 502, "bureau_unavailable")
    # the bureau paid it: the workflow, started all the same, asks 6301 and books it
    await eventually(lambda: status_of(api, auth, order["settlement_id"], "completed"), tries=200)
    assert await paid_methods(api, visit_id) == {"insurance_pooled": 7200, "insurance_personal": 4800}
    assert_problem(await api.http.post(path, json={"channel": "nhsa_mobile"}, headers=auth), 409, "settlement_used")


async def test_refunds_of_a_mobile_order_go_back_through_the_bureau_by_6203(
    api, clinic: Clinic, simulators: Simulators, platform: ToApi
) -> None:
    """Cancelled after paying: each refund (newest payment first) goes back through the part its
    payment was, by 6203 under its own appRefdSn; the order refunded whole is "7" at the bureau."""
    _, visit_id, auth, paying = await pay_order(api, clinic)
    db = await settlement_row(simulators, paying)
    cashier = await bureau(simulators, "POST", paying["cashier_url"], json={"payToken": db["payToken"]})
    assert cashier.status_code == 200, cashier.text
    await eventually(lambda: status_of(api, auth, paying["settlement_id"], "completed"), tries=200)
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])

    async def settled(wanted: int) -> list[dict[str, Any]]:
        mine = [r for r in await refunds(api) if r["visit_id"] == visit_id]
        done = sum(r["amount_fen"] for r in mine if r["status"] == "succeeded")
        return mine if done == wanted and all(r["status"] == "succeeded" for r in mine) else []

    first = await eventually(lambda: settled(12000), tries=300)
    assert {r["method"] for r in first} <= set(BOOKED)
    by_part = {
        "insurance_pooled": "fundRefunded",
        "insurance_personal": "psnAcctRefunded",
        "nhsa_mobile": "cashRefunded",
    }
    order = (await bureau(simulators, "GET", f"/inspect/mobile/{db['payOrdId']}")).json()
    at_bureau = {name: yuan_fen(order[field]) for name, field in by_part.items()}
    asked = {name: sum(r["amount_fen"] for r in first if r["method"] == name) for name in by_part}
    assert at_bureau == asked and sum(asked.values()) == 12000
    assert order["ordStas"] == "6"  # a part back: still paid
    bill = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["bill"]
    assert bill["balance_fen"] == 0
    # the rest cancelled too (the registration fee stays owed): every part back but the fee's 500
    await clinic.event(visit_id, "orders_cancelled", item_ids=["amox"])
    rest = await eventually(lambda: settled(15000), tries=300)
    order = (await bureau(simulators, "GET", f"/inspect/mobile/{db['payOrdId']}")).json()
    back = sum(yuan_fen(order[f]) for f in by_part.values())
    assert back == sum(r["amount_fen"] for r in rest) == 15000


def yuan_fen(value: str) -> int:
    return round(float(value) * 100)


async def test_a_second_payment_of_the_same_visits_is_refused_while_the_first_is_on_its_way(
    api, clinic: Clinic, factory
) -> None:
    """Two orders over one visit: once the first is paying (its fund and account parts paid at
    the bureau), the second is refused before its 6202, and so is a new order or a card-less
    payment of the same visit, which would have the fund and the account pay the bill again."""
    _, visit_id, auth, first = await ordered(api, clinic)
    r = await api.http.post("/v1/sandbox/insurance/pay-auth", headers=auth)
    second = await api.http.post(ORDERS, json={"pay_auth_no": r.json()["pay_auth_no"]}, headers=auth)
    assert second.status_code == 201, second.text
    cardless = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert cardless.status_code == 201, cardless.text
    assert cardless.json()["visit_ids"] == [visit_id]
    paying = await pay(api, auth, first["settlement_id"])
    assert paying["status"] == "paying"
    path = "/v1/patient/insurance/settlements/{}/pay"
    refused = await api.http.post(
        path.format(second.json()["settlement_id"]), json={"channel": "nhsa_mobile"}, headers=auth
    )
    assert_problem(refused, 409, "payment_in_progress")
    refused = await api.http.post(
        path.format(cardless.json()["settlement_id"]), json={"channel": "sandbox"}, headers=auth
    )
    assert_problem(refused, 409, "payment_in_progress")
    r = await api.http.post("/v1/sandbox/insurance/pay-auth", headers=auth)
    assert_problem(
        await api.http.post(ORDERS, json={"pay_auth_no": r.json()["pay_auth_no"]}, headers=auth),
        409,
        "payment_in_progress",
    )
    async with factory() as session:  # neither refused one moved
        for settlement in (second.json(), cardless.json()):
            row = await session.get(InsuranceSettlement, settlement["settlement_id"])
            assert row is not None and (row.status, row.channel) == ("presettled", "")


async def test_a_6202_the_bureau_did_not_take_can_be_sent_again(
    api, clinic: Clinic, transport: Losing, simulators: Simulators, platform: ToApi
) -> None:
    """A 6202 refused as stale never reached the bureau's books: nothing was paid, so the settlement
    is presettled again (503, try again), not left paying until the deadline; sent again, it pays."""
    _, visit_id, auth, order = await ordered(api, clinic, fee=0)
    transport.stale.add("6202")
    path = f"/v1/patient/insurance/settlements/{order['settlement_id']}/pay"
    r = await api.http.post(path, json={"channel": "nhsa_mobile"}, headers=auth)
    assert_problem(r, 503, "bureau_unavailable")
    assert await status_of(api, auth, order["settlement_id"], "presettled") is not None
    paying = await pay(api, auth, order["settlement_id"])
    assert paying["status"] in ("paying", "completed")
    await eventually(lambda: status_of(api, auth, order["settlement_id"], "completed"), tries=200)
    assert await paid_methods(api, visit_id) == {"insurance_pooled": 7200, "insurance_personal": 4800}
