"""医保脱卡支付 when the self-pay part never comes: the insurance settlement is reversed (冲正)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from config import Settings
from tests.api.test_insurance import presettled
from tests.api.test_refunds import eventually
from tests.flows import Clinic
from tests.support import sandbox_settings
from tests.workflows.test_visit_workflow import record
from workflows import contracts as c


@pytest.fixture
def settings(database_url: str) -> Settings:
    return sandbox_settings(database_url, insurance_self_pay_timeout=timedelta(seconds=2))


async def test_self_pay_not_paid_in_time_reverses_the_insurance(api, clinic: Clinic, temporal_env) -> None:
    patient_id, visit_id, auth, split = await presettled(api, clinic)
    r = await api.http.post(
        f"/v1/patient/insurance/settlements/{split['settlement_id']}/pay", json={"channel": "sandbox"}, headers=auth
    )
    assert r.status_code == 200, r.text

    async def reversed_() -> dict[str, Any] | None:
        s = (await api.http.get(f"/v1/patient/insurance/settlements/{split['settlement_id']}", headers=auth)).json()
        return s if s["status"] == "reversed" else None

    done = await eventually(reversed_, tries=200)
    assert "冲正" in done["detail"]
    bureau = (await api.http.get(f"/v1/sandbox/insurance-settlements/{patient_id}")).json()
    assert [b["status"] for b in bureau] == ["reversed"]
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert visit["bill"]["balance_fen"] == 15500 and visit["bill"]["payments"] == []  # nothing was booked
    # the self-pay order was closed with the 冲正: paying it now is refused, nothing lands
    late = await api.http.post(f"/v1/sandbox/payments/{r.json()['self_pay']['payment_id']}/complete")
    assert late.status_code == 409 and late.json()["code"] == "payment_conflict", late.text
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["bill"]["paid_fen"] == 0
    listed = (
        await api.http.get(
            "/v1/ops/insurance-settlements", params={"patient_id": patient_id, "status": "reversed"}, headers=api.ops
        )
    ).json()
    assert [x["settlement_id"] for x in listed] == [split["settlement_id"]]
    # the personal account got its money back: a new pre-settlement splits the same way
    again = (await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)).json()
    assert (again["pooled_fen"], again["personal_fen"], again["self_pay_fen"]) == (9000, 6000, 500)
    await record(
        temporal_env.client.get_workflow_handle(c.insurance_workflow_id(split["settlement_id"])), "insurance_reversed"
    )
