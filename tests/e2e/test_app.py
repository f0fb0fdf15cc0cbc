"""The phone app in real headless Chromium (Debian's, driven by Playwright) against the
running stack: sign-in, enrolment, a visit's timeline updating live, the bill and payment.
With YHF_SCREENSHOTS=1 the screens are saved to docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack
from tests.e2e.test_stack import HIS, until
from tests.flows import Clinic, random_id_number, random_phone
from tests.support import uid

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
async def page(stack: Stack, tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                            locale="zh-CN", timezone_id="Asia/Shanghai", is_mobile=True,
                                            has_touch=True, base_url=stack.api_url)
        page = await context.new_page()
        page.screens = DOCS if os.environ.get("YHF_SCREENSHOTS") == "1" else tmp_path  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())
        yield page
        await browser.close()


async def shot(page: Any, name: str) -> None:
    page.screens.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(page.screens / f"{name}.png"), full_page=True)


async def last_code(http: httpx.AsyncClient, phone: str, before: int) -> str:
    async def texts() -> list[dict[str, Any]]:
        return (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()

    got = await until(texts, lambda ms: len([m for m in ms if m["template"] == "verification_code"]) > before)
    return [m for m in got if m["template"] == "verification_code"][-1]["params"]["code"]


async def sign_in(page: Any, http: httpx.AsyncClient, phone: str) -> None:
    await page.goto("/app/")
    await page.wait_for_selector("text=登录医后付")
    codes = len([m for m in (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()
                 if m["template"] == "verification_code"])
    await page.fill("#phone", phone)
    await page.wait_for_timeout(1100)  # codes to one phone are at least a second apart here
    await page.click("#send")
    await page.fill("#code", await last_code(http, phone, codes))
    await page.click("#go")


async def test_visit_bill_and_payment_in_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    assert await page.text_content("#service") == "正常"
    assert "已开通" in await page.text_content("main")
    await shot(page, "1-home")

    await page.click("a[data-tab=visits]")
    await page.click(f"a[href='#/visit/{visit_id}']")
    await page.wait_for_selector("#stage")
    assert await page.text_content("#stage") == "已挂号"
    # the clinic moves on; the open screen follows without a reload
    await clinic.event(visit_id, "checked_in", channel="nurse_station")
    await clinic.event(visit_id, "called", room="5诊室")
    await page.wait_for_function("document.querySelector('#stage').textContent === '已叫号，请到诊室'", timeout=15000)
    assert "叫号" in await page.text_content("#timeline")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[{"item_id": "ct", "code": "CT01", "name": "胸部CT",
                                                          "category": "exam", "unit_price_fen": 28000,
                                                          "quantity": 1}])
    await clinic.event(visit_id, "consultation_ended")
    await page.wait_for_function("document.querySelector('#stage').textContent === '检查/检验中'", timeout=15000)
    await shot(page, "2-visit-timeline")
    await clinic.event(visit_id, "results_ready", item_ids=["ct"])
    await clinic.event(visit_id, "discharged")

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    await until(visit, lambda v: v["payment_status"] != "open")
    await page.click("a[data-tab=bill]")
    await page.wait_for_selector("#total")
    assert await page.text_content("#total") == "¥285.00"
    assert "胸部CT" in await page.text_content("main")
    await shot(page, "3-bill")
    assert {await b.get_attribute("data-channel") for b in await page.query_selector_all("button[data-channel]")} == {
        "wechat", "alipay", "sandbox"}
    await page.click("button[data-channel=wechat]")
    await page.wait_for_selector("#confirm")
    assert "wx.tenpay.com" in (await page.get_attribute("a.btn", "href") or "")  # the H5 order's URL
    await shot(page, "4-pay")
    await page.click("#confirm")
    await page.wait_for_selector("#paid")
    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert settled["bill"]["balance_fen"] == 0
    assert [p["method"] for p in settled["bill"]["payments"]] == ["wechat"]

    await page.click("a[data-tab=messages]")
    await page.wait_for_selector("text=已记账")
    await shot(page, "5-messages")


async def test_sign_in_bind_identity_and_enrol(page: Any, http: httpx.AsyncClient) -> None:
    id_number = random_id_number()
    r = await http.post("/v1/his/patients", headers=HIS, json={
        "card_type": "id_card", "card_no": uid("ID"), "name": "周芷若", "id_number": id_number,
        "insured_locally": False})
    assert r.status_code == 201
    await http.put(f"/v1/sandbox/credit-scores/{id_number}", json={"bank_score": 120, "sesame_score": 650})
    phone = random_phone()
    await sign_in(page, http, phone)
    await page.wait_for_selector("text=绑定就诊人")
    await page.fill("#name", "周芷若")
    await page.fill("#idn", id_number)
    await page.click("#go")
    await page.wait_for_selector("#enrol")
    await page.click("#enrol")
    await page.wait_for_selector("text=医后付服务协议")
    await shot(page, "6-enrol")
    await page.wait_for_timeout(1100)  # codes to one phone are at least a second apart here
    codes = len([m for m in (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()
                 if m["template"] == "verification_code"])
    await page.click("#send")
    await page.fill("#code", await last_code(http, phone, codes))
    await page.click("#go")
    await page.wait_for_selector("#unenrol")
    assert "已开通" in await page.text_content("main")
    await page.click("a[href='#/credit']")
    await page.wait_for_selector("#bank")
    assert await page.text_content("#bank") == "120" and await page.text_content("#sesame") == "650"
    await shot(page, "7-credit")


async def test_insurance_payment_and_the_receipt_in_the_app(page: Any, http: httpx.AsyncClient,
                                                          clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    for event, fields in (("checked_in", {"channel": "app"}), ("called", {}), ("consultation_started", {}),
                          ("prescribed", {"items": [{"item_id": "amox", "code": "D01", "name": "阿莫西林胶囊",
                                                     "category": "drug", "unit_price_fen": 4200, "quantity": 2}],
                                          "skin_test_required": False}), ("discharged", {})):
        await clinic.event(visit_id, event, **fields)
    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    await page.click("a[data-tab=bill]")
    await page.click("#insurance")
    await page.wait_for_selector("#split")
    # drugs 8400: pooled 60% = 5040, personal account 3360; the registration fee is self-pay
    assert await page.text_content("#self-pay") == "¥5.00"
    await shot(page, "8-insurance")
    await page.click("button[data-channel=alipay]")
    await page.wait_for_selector("#confirm")
    await page.click("#confirm")
    await page.wait_for_selector("#paid")

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert {p["method"]: p["amount_fen"] for p in settled["bill"]["payments"]} == {
        "alipay": 500, "insurance_pooled": 5040, "insurance_personal": 3360}
    await page.click("a[data-tab=home]")
    await page.click("#receipts-link")
    await page.wait_for_selector(".receipt")
    text = await page.text_content("main")
    assert "医保统筹基金 ¥50.40" in text and "支付宝 ¥5.00" in text
    async with page.expect_download() as download:
        await page.click("button[data-receipt]")
    assert (await download.value).suggested_filename.startswith("receipt-R")
    await shot(page, "9-receipts")
