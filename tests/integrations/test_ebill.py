"""The fiscal e-bill platform's protocol (integrations/ebill.py) against its simulator: the
signature, busNo idempotency, the totals and the split, 冲红 of a valid bill only, the bill's
state and the day's totals check. Over ASGI, no database."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from config import DEV_EBILL_AGENCY_CODE, Settings
from integrations.ebill import ChargeLine, Code, DayTotals, EBillClient, EBillRefused, OutpatientBill
from integrations.ebill_wire import (
    PLATFORM_TZ,
    decode_data,
    dumps,
    envelope,
    fen_to_yuan,
    signature,
    yuan_to_fen,
)
from simulators import ebill

APP, KEY, AGENCY = "hosp-1", "ebill-key-for-tests", "AG-0001"
AT = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)
BILL = OutpatientBill(
    bus_no="R20260308ABCDEF-1",
    bus_time=AT,
    payer="张三丰",
    patient_no="pat_1",
    visit_no="v1",
    department="内科",
    visit_date=date(2026, 3, 8),
    total_fen=12_510,
    account_pay_fen=2_000,
    fund_pay_fen=6_000,
    channels=[("YBZH", 2_000), ("YBTCJJ", 6_000), ("WX", 4_510)],
    lines=[
        ChargeLine(code="reg", name="挂号费", category="other", quantity=1, unit_price_fen=500, amount_fen=500),
        ChargeLine(code="xray", name="胸部X线", category="exam", quantity=1, unit_price_fen=12_000, amount_fen=12_000),
        ChargeLine(code="swab", name="棉签", category="material", quantity=2, unit_price_fen=5, amount_fen=10),
    ],
)


@pytest.fixture
async def platform() -> AsyncIterator[tuple[EBillClient, httpx.AsyncClient]]:
    app = ebill.simulator_app({APP: KEY}, {APP: AGENCY}, clock=lambda: AT)  # the platform's time pinned
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ebill") as http:
        client = EBillClient(http, app_id=APP, app_key=KEY, agency_code=AGENCY, region_code="440300", place_code="001")
        yield client, http
    app.state.store.close()


async def seen(http: httpx.AsyncClient) -> list[dict]:
    return (await http.get("/_sandbox/ebills")).json()


def test_amounts_are_yuan_with_two_decimals_converted_exactly() -> None:
    assert [str(fen_to_yuan(f)) for f in (0, 1, 10, 12_510, 1_000_000_001)] == [
        "0.00",
        "0.01",
        "0.10",
        "125.10",
        "10000000.01",
    ]
    assert [yuan_to_fen(Decimal(t)) for t in ("0.01", "125.1", "125.10", "3")] == [1, 12_510, 12_510, 300]
    with pytest.raises(ValueError, match="two decimals"):
        yuan_to_fen(Decimal("0.005"))
    assert dumps({"a": Decimal("1.5"), "b": [Decimal("0.1")], "c": "张"}) == '{"a":1.50,"b":[0.10],"c":"张"}'
    assert decode_data(base64.b64encode(b'{"x":0.10}').decode()) == {"x": Decimal("0.10")}


def test_the_signature_is_the_upper_md5_of_the_sorted_parameters_and_the_key() -> None:
    body = envelope(APP, KEY, {"busNo": "1", "totalAmt": Decimal("1.00")}, noise="n" * 32)
    assert json.loads(base64.b64decode(body["data"])) == {"busNo": "1", "totalAmt": 1.0}
    assert b'"totalAmt":1.00' in base64.b64decode(body["data"])
    text = f"appid={APP}&data={body['data']}&noise={'n' * 32}&version=1.0&key={KEY}"
    assert body["sign"] == hashlib.md5(text.encode()).hexdigest().upper() == signature(body, KEY)
    assert body["sign"].isupper() and len(body["sign"]) == 32


async def test_a_bill_round_trip_then_idempotent_by_bus_no(platform) -> None:
    client, http = platform
    issued = await client.issue_outpatient(BILL)
    assert issued.batch_code and issued.bill_no and issued.random and issued.picture_url
    assert base64.b64decode(issued.qr_code).startswith(b"\x89PNG")
    assert issued.created_at == AT  # the platform's (pinned) time, read back from Beijing time
    again = await client.issue_outpatient(BILL)  # a retry: the same busNo and body
    assert again == issued
    [bill] = await seen(http)
    assert (bill["bus_no"], bill["bill_no"], bill["state"], bill["total_fen"]) == (
        BILL.bus_no,
        issued.bill_no,
        "issued",
        12_510,
    )
    received = bill["received"]
    assert (received["totalAmt"], received["accountPay"], received["fundPay"], received["ownPay"]) == (
        "125.10",
        "20.00",
        "60.00",
        "45.10",
    )
    assert [(r["chargeCode"], r["amt"]) for r in received["chargeDetail"]] == [
        ("other", "5.00"),
        ("exam", "120.00"),
        ("material", "0.10"),
    ]
    # nothing personal beyond the payer's name: no ID number, phone, e-mail, insurance card
    assert received["payer"] == "张三丰"
    assert not {"idCardNo", "tel", "email", "cardNo", "medicalInsuranceID"} & set(received)
    # the same busNo for another body is refused
    with pytest.raises(EBillRefused) as refused:
        await client.issue_outpatient(replace(BILL, remark="changed"))
    assert refused.value.code == Code.bus_no_conflict
    assert len(await seen(http)) == 1


async def test_a_tampered_signature_or_appid_or_data_is_refused(platform) -> None:
    client, http = platform
    params = client.outpatient_params(BILL)
    body = envelope(APP, KEY, params)
    tampered = {**body, "sign": body["sign"][:-1] + ("0" if body["sign"][-1] != "0" else "1")}
    assert await _result(http, tampered) == Code.sign_wrong
    # the data changed after signing
    other = envelope(APP, KEY, {**params, "totalAmt": Decimal("1.00")})
    assert await _result(http, {**body, "data": other["data"]}) == Code.sign_wrong
    assert await _result(http, envelope("nobody", KEY, params)) == Code.appid_unknown
    assert await _result(http, envelope(APP, "another-key", params)) == Code.sign_wrong
    bad = {"appid": APP, "data": "not base64!", "noise": "n" * 32, "version": "1.0"}
    assert await _result(http, {**bad, "sign": signature(bad, KEY)}) == Code.malformed
    assert await _result(http, envelope(APP, KEY, {**params, "agencyCode": "AG-OTHER"})) == Code.parameter
    assert await seen(http) == []


async def test_wrong_totals_and_splits_and_missing_fields_are_refused(platform) -> None:
    client, http = platform
    params = client.outpatient_params(BILL)
    short_lines = {**params, "chargeDetail": params["chargeDetail"][:-1]}
    wrong_split = {**params, "ownPay": Decimal("45.00")}
    wrong_channels = {**params, "payChannelDetail": params["payChannelDetail"][:-1]}
    third_decimal = {**params, "totalAmt": "125.105"}
    for case in (short_lines, wrong_split, wrong_channels):
        assert await _result(http, envelope(APP, KEY, case)) == Code.amounts
    raw = envelope(APP, KEY, params)["data"]
    decoded = base64.b64decode(raw).replace(b'"totalAmt":125.10', b'"totalAmt":125.105')
    body = {"appid": APP, "data": base64.b64encode(decoded).decode(), "noise": "n" * 32, "version": "1.0"}
    assert await _result(http, {**body, "sign": signature(body, KEY)}) == Code.amounts
    assert await _result(http, envelope(APP, KEY, third_decimal)) == Code.parameter  # a string, not a number
    missing = {k: v for k, v in params.items() if k != "payer"}
    assert await _result(http, envelope(APP, KEY, missing)) == Code.parameter
    with pytest.raises(EBillRefused) as refused:  # the client's own bill, its channels short of the total
        await client.issue_outpatient(replace(BILL, channels=[("WX", 4_510)]))
    assert refused.value.code == Code.amounts
    assert await seen(http) == []


async def test_only_a_valid_bill_is_written_off_and_its_state_says_so(platform) -> None:
    client, http = platform
    with pytest.raises(EBillRefused) as refused:
        await client.write_off("44060126", "0000000404", reason="退费", at=AT)
    assert refused.value.code == Code.no_such_bill
    issued = await client.issue_outpatient(BILL)
    state = await client.state(issued.batch_code, issued.bill_no)
    assert (state.valid, state.scarlet, state.scarlet_at) == (True, False, None)
    red = await client.write_off(issued.batch_code, issued.bill_no, reason="退费", at=AT)
    assert red.bill_no and red.bill_no != issued.bill_no
    with pytest.raises(EBillRefused) as again:
        await client.write_off(issued.batch_code, issued.bill_no, reason="退费", at=AT)
    assert again.value.code == Code.wrong_state
    state = await client.state(issued.batch_code, issued.bill_no)
    assert (state.valid, state.scarlet, state.scarlet_bill_no) == (False, True, red.bill_no)
    assert state.scarlet_at == red.created_at  # the red bill's time, as the platform gives it
    [bill] = await seen(http)
    assert (bill["state"], bill["scarlet_bill_no"], bill["write_off_reason"]) == ("written_off", red.bill_no, "退费")


async def test_the_days_totals_match_or_not(platform) -> None:
    client, _ = platform
    first = await client.issue_outpatient(BILL)
    second = await client.issue_outpatient(
        replace(
            BILL,
            bus_no="R2-1",
            total_fen=500,
            channels=[("WX", 500)],
            account_pay_fen=0,
            fund_pay_fen=0,
            lines=BILL.lines[:1],
        )
    )
    await client.write_off(first.batch_code, first.bill_no, reason="退费", at=AT)
    day = date(2026, 3, 8)  # the platform's (pinned) day of the bills: 10:00 Beijing
    assert first.created_at.astimezone(PLATFORM_TZ).date() == second.created_at.astimezone(PLATFORM_TZ).date() == day
    right = DayTotals(issued=2, issued_fen=13_010, written_off=1, written_off_fen=12_510)
    check = await client.check_totals(day, right)
    assert check.matched and check.platform == right
    wrong = replace(right, written_off_fen=12_500)
    check = await client.check_totals(day, wrong)
    assert not check.matched and check.platform == right and check.ours == wrong
    nothing = DayTotals(issued=0, issued_fen=0, written_off=0, written_off_fen=0)
    other_day = await client.check_totals(date(2020, 1, 1), nothing)
    assert other_day.matched and other_day.platform == nothing


def test_the_sandboxs_key_and_agency_code_are_refused_outside_it() -> None:
    real: dict[str, Any] = {
        "his_api_key": "h" * 20,
        "ops_api_key": "o" * 20,
        "data_key": "d" * 40,
        "insurance_bureau_url": "https://bureau",
        "insurance_bureau_secret": "b" * 20,
        "credit_platform_url": "https://credit",
        "credit_platform_secret": "c" * 20,
        "credit_creditor_code": "H-1",
        "ebill_url": "https://ebill.example",
    }
    with pytest.raises(ValueError, match="YHF_EBILL_APP_KEY"):
        Settings(sandbox=False, **real, ebill_app_key="dev-ebill-key", ebill_agency_code="AG-1")
    with pytest.raises(ValueError, match="YHF_EBILL_AGENCY_CODE"):
        Settings(sandbox=False, **real, ebill_app_key="k" * 20, ebill_agency_code=DEV_EBILL_AGENCY_CODE)
    sandbox = Settings(sandbox=True)
    assert (sandbox.ebill_app_key, sandbox.ebill_agency_code) == ("dev-ebill-key", DEV_EBILL_AGENCY_CODE)


async def _result(http: httpx.AsyncClient, body: dict) -> str:
    response = await http.post("/api/medical/invoiceEBillOutpatient", json=body)
    assert response.status_code == 200
    return response.json()["result"]
