"""A pre-settlement that fails after its 2201 (refused, timed out, a 5xx, a split that does not add
up) is taken back at the bureau (2205, 2202) and answered 502 with a stable code; the bureau's
err_msg (which may carry a name or an ID number) reaches neither the answer nor the log."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal

import httpx
import pytest

from config import Settings
from integrations.factory import Integrations, build_integrations
from tests.activities.test_nhsa_retries import Faulty
from tests.api.test_insurance import drug_and_exam_visit
from tests.api.test_patient import sign_in
from tests.flows import Clinic, assert_problem
from tests.support import Simulators

ID_NUMBER = "110105199001011234"


@pytest.fixture
def transport(simulators: Simulators) -> Faulty:
    return Faulty(simulators.bureau)


@pytest.fixture
async def integrations(settings: Settings, simulators: Simulators, transport: Faulty) -> AsyncIterator[Integrations]:
    """The API's and the worker's clients reach this test's bureau through `transport`."""
    async with AsyncExitStack() as stack:
        yield build_integrations(
            settings, stack, transports=dataclasses.replace(simulators.transports(), bureau=transport)
        )


def on_2206(answer: httpx.Response | Exception):
    def fault(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["infno"] != "2206":
            return None
        if isinstance(answer, Exception):
            raise answer
        return answer

    return fault


async def treatments(simulators: Simulators, patient_id: str) -> list[tuple[str, int]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulators.bureau), base_url="http://b") as http:
        return [(t["status"], t["fees_fen"]) for t in (await http.get(f"/_sandbox/treatments/{patient_id}")).json()]


async def presettle(api, clinic: Clinic) -> tuple[str, httpx.Response]:
    patient_id, phone = await clinic.enrolled_patient()
    await drug_and_exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    return patient_id, await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (httpx.ReadTimeout("the bureau is slow"), "bureau_unavailable"),
        (httpx.Response(503, text="busy"), "bureau_error"),
        (
            httpx.Response(200, json={"infcode": -1, "err_msg": f"[PersonInvalid] 张三 {ID_NUMBER} 不符"}),
            "bureau_error",
        ),
    ],
)
async def test_a_failed_2206_is_taken_back_and_answered_502(
    api, clinic: Clinic, simulators: Simulators, transport: Faulty, caplog: pytest.LogCaptureFixture, answer, code: str
) -> None:
    transport.fault = on_2206(answer)
    caplog.set_level(logging.DEBUG)
    patient_id, r = await presettle(api, clinic)
    assert_problem(r, 502, code)
    assert ID_NUMBER not in r.text and "张三" not in r.text
    assert ID_NUMBER not in caplog.text and "张三" not in caplog.text
    assert await treatments(simulators, patient_id) == [("revoked", 0)]  # 2205 and 2202 were sent
    assert await simulators.inspect.settlements(patient_id) == []


async def test_a_split_that_does_not_add_up_is_taken_back(
    api, clinic: Clinic, simulators: Simulators, transport: Faulty
) -> None:
    """The bureau's 2206 split whose parts are not its total: nothing is pre-settled here."""

    def fault(request: httpx.Request) -> httpx.Response | None:
        env = json.loads(request.content)
        if env["infno"] != "2206":
            return None
        total = Decimal(str(env["input"]["data"]["medfee_sumamt"]))
        setlinfo = {
            "mdtrt_id": env["input"]["data"]["mdtrt_id"],
            "setl_id": "",
            "medfee_sumamt": str(total),
            "fund_pay_sumamt": "90.00",
            "acct_pay": "60.00",
            "psn_cash_pay": "9.00",  # 159.00, not 155.00
        }
        return httpx.Response(200, json={"infcode": 0, "output": {"setlinfo": setlinfo}})

    transport.fault = fault
    patient_id, r = await presettle(api, clinic)
    assert_problem(r, 502, "bureau_error")
    assert "SplitMismatch" in r.json()["detail"]
    assert await treatments(simulators, patient_id) == [("revoked", 0)]
