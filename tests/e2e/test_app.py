"""The phone app in real headless Chromium (Debian's, driven by Playwright) against the
running stack: sign-in, enrolment, a visit's timeline updating live, the bill and payment.
With YHF_SCREENSHOTS=1 the screens are saved to docs/screenshots/."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from devstack import Stack
from tests.e2e.test_stack import HIS, OPS, until
from tests.flows import Clinic, item, random_id_number, random_phone
from tests.support import uid

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHINA = timezone(timedelta(hours=8))


@pytest.fixture
async def page(stack: Stack, tmp_path: Path) -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = await browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            is_mobile=True,
            has_touch=True,
            base_url=stack.api_url,
        )
        page = await context.new_page()
        # where shot() saves this test's screenshots, carried on the page: Playwright's Page has no such field
        page.screens = DOCS if os.environ.get("YHF_SCREENSHOTS") == "1" else tmp_path  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())
        yield page
        await browser.close()


async def shot(page: Any, name: str) -> None:
    """The whole screen as a phone as tall as the page shows it: the header on top and the tab
    bar at the bottom (a full-page capture leaves sticky bars where the scroll left them)."""
    page.screens.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = await page.evaluate("() => document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    await page.evaluate("() => window.scrollTo(0, 0)")
    await page.screenshot(path=str(page.screens / f"{name}.png"))
    await page.set_viewport_size(size)


async def last_code(http: httpx.AsyncClient, phone: str, before: int) -> str:
    async def texts() -> list[dict[str, Any]]:
        return (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()

    got = await until(texts, lambda ms: len([m for m in ms if m["template"] == "verification_code"]) > before)
    return [m for m in got if m["template"] == "verification_code"][-1]["params"]["code"]


async def sign_in(page: Any, http: httpx.AsyncClient, phone: str) -> None:
    await page.goto("/app/")
    await page.wait_for_selector("text=登录医后付")
    codes = len(
        [m for m in (await http.get(f"/v1/sandbox/sms?phone={phone}")).json() if m["template"] == "verification_code"]
    )
    await page.fill("#phone", phone)
    await page.wait_for_timeout(1100)  # codes to one phone are at least a second apart here
    await page.click("#send")
    await page.fill("#code", await last_code(http, phone, codes))
    await page.click("#go")


def shown(iso: str) -> str:
    """A time as the app shows it: China time, to the minute."""
    return datetime.fromisoformat(iso).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def fetcher(http: httpx.AsyncClient, visit_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def get() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    return get


async def act(
    http: httpx.AsyncClient, visit_id: str, body: dict[str, Any], operator: str = "clerk-1"
) -> httpx.Response:
    """An operator's action on a visit (the ops API)."""
    headers = {**OPS, "X-Operator-Id": operator, "Idempotency-Key": uid("act")}
    return await http.post(f"/v1/ops/visits/{visit_id}/actions", json=body, headers=headers)


def a_day_away() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()


def payment_on_screen(page: Any) -> str:
    return page.url.split("#/pay/")[1].split("/")[0]


async def pay_at_the_channel(http: httpx.AsyncClient, payment_id: str) -> None:
    """The patient pays on the channel's own page (its simulator notifies the API)."""
    r = await http.post(f"/v1/sandbox/payments/{payment_id}/complete")
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text


async def test_visit_bill_and_payment_in_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    completions: list[str] = []
    page.on("request", lambda r: completions.append(r.url) if "/v1/sandbox/payments/" in r.url else None)
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    assert await page.text_content("#service") == "正常"
    assert "已开通" in await page.text_content("main")

    await page.click("a[data-tab=visits]")
    await page.click(f"a[href='#/visit/{visit_id}']")
    await page.wait_for_selector("#stage")
    assert await page.text_content("#stage") == "已挂号"
    # the clinic moves on; the open screen follows without a reload
    await clinic.event(visit_id, "checked_in", channel="nurse_station")
    await clinic.event(visit_id, "called", room="5诊室")
    # (locators, not wait_for_function: the app's Content-Security-Policy forbids eval)
    await expect(page.locator("#stage")).to_have_text("已叫号，请到诊室", timeout=15000)
    assert "叫号" in await page.text_content("#timeline")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(
        visit_id,
        "orders_placed",
        items=[
            {
                "item_id": "ct",
                "code": "CT01",
                "name": "胸部CT",
                "category": "exam",
                "unit_price_fen": 28000,
                "quantity": 1,
            }
        ],
    )
    await clinic.event(visit_id, "consultation_ended")
    await expect(page.locator("#stage")).to_have_text("检查/检验中", timeout=15000)
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
    assert {await b.get_attribute("data-channel") for b in await page.query_selector_all("button[data-channel]")} == {
        "wechat",
        "alipay",
        "sandbox",
    }
    await page.click("button[data-channel=wechat]")
    await page.wait_for_selector("#waiting")
    assert "wx.tenpay.com" in (await page.get_attribute("#away", "href") or "")  # the H5 order's URL
    assert await page.query_selector("#confirm") is None  # no sandbox button for a real channel
    await shot(page, "4-pay")
    payment_id = payment_on_screen(page)
    r = await page.evaluate(
        "(id) => fetch(`/v1/patient/payments/${id}`, {headers: {authorization: "
        "`Bearer ${localStorage.getItem('yhf.token')}`}}).then((r) => r.json())",
        payment_id,
    )
    assert r["status"] == "pending" and r["final"] is False and r["channel"] == "wechat"
    await pay_at_the_channel(http, payment_id)
    await page.wait_for_selector("#paid", timeout=15000)  # the screen follows the payment
    assert completions == []  # the app never played the channel itself
    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert settled["bill"]["balance_fen"] == 0
    assert [p["method"] for p in settled["bill"]["payments"]] == ["wechat"]

    await page.click("a[data-tab=messages]")
    await page.wait_for_selector("text=已记账")
    # bills and notices; the enrolment code, used long ago, is not kept in the app
    assert "验证码" not in await page.text_content("main")
    assert await page.locator(".message[data-kind=bill]").count() >= 2
    await shot(page, "5-messages")


async def test_sign_in_bind_identity_and_enrol(page: Any, http: httpx.AsyncClient) -> None:
    id_number = random_id_number()
    r = await http.post(
        "/v1/his/patients",
        headers=HIS,
        json={
            "card_type": "id_card",
            "card_no": uid("ID"),
            "name": "周芷若",
            "id_number": id_number,
            "insured_locally": False,
        },
    )
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
    codes = len(
        [m for m in (await http.get(f"/v1/sandbox/sms?phone={phone}")).json() if m["template"] == "verification_code"]
    )
    await page.click("#send")
    await page.fill("#code", await last_code(http, phone, codes))
    await page.click("#go")
    await page.wait_for_selector("#unenrol")
    assert "已开通" in await page.text_content("main")
    await page.click("a[href='#/credit']")
    await page.wait_for_selector("#bank")
    assert await page.text_content("#bank") == "120" and await page.text_content("#sesame") == "650"
    await shot(page, "7-credit")


async def test_insurance_payment_and_the_receipt_in_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    for event, fields in (
        ("checked_in", {"channel": "app"}),
        ("called", {}),
        ("consultation_started", {}),
        (
            "prescribed",
            {
                "items": [
                    {
                        "item_id": "amox",
                        "code": "D01",
                        "name": "阿莫西林胶囊",
                        "category": "drug",
                        "unit_price_fen": 4200,
                        "quantity": 2,
                    }
                ],
                "skin_test_required": False,
            },
        ),
        ("discharged", {}),
    ):
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
    await page.wait_for_selector("#waiting")
    await pay_at_the_channel(http, payment_on_screen(page))
    await page.click("#check")
    await page.wait_for_selector("#paid", timeout=15000)

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert {p["method"]: p["amount_fen"] for p in settled["bill"]["payments"]} == {
        "alipay": 500,
        "insurance_pooled": 5040,
        "insurance_personal": 3360,
    }
    await page.click("a[data-tab=home]")
    await page.click("#receipts-link")
    await page.wait_for_selector(".receipt")
    text = await page.text_content("main")
    assert "医保统筹基金 ¥50.40" in text and "支付宝 ¥5.00" in text
    async with page.expect_download() as download:
        await page.click("button[data-receipt]")
    assert (await download.value).suggested_filename.startswith("receipt-R")
    await shot(page, "9-receipts")


async def test_insurance_mobile_payment_in_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    """医保移动支付 through the page: the sandbox's e-voucher authorisation, the bureau's order and
    its split, paying it, the cash part at the (sandbox) platform's cashier, then completed."""
    sent: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda r: sent.append((r.url, r.headers.get("idempotency-key"))) if r.method == "POST" else None,
    )
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    for event, fields in (
        ("checked_in", {"channel": "app"}),
        ("called", {}),
        ("consultation_started", {}),
        ("orders_placed", {"items": [item("xray", "exam", 12000)]}),
        ("consultation_ended", {}),
        ("discharged", {}),
    ):
        await clinic.event(visit_id, event, **fields)
    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    await page.click("a[data-tab=bill]")
    await page.click("#insurance")
    await page.click("#mobile")
    await page.wait_for_selector("#mobile-pay")
    # the bureau's split of the order: the fund 60% of the covered X-ray, the account the rest, the fee cash
    split = [await page.text_content(f"#{part}") for part in ("fund", "account", "cash")]
    assert split == ["¥72.00", "¥48.00", "¥5.00"]
    settlement_id = page.url.split("#/mobile/")[1]
    await shot(page, "12-insurance-mobile")
    await page.click("#mobile-pay")
    await page.click("#cashier")
    await page.wait_for_selector("#mobile-paid", timeout=20000)
    assert "已付 ¥125.00" in await page.text_content("main")
    keys = {url.split("/v1/")[1]: key for url, key in sent if "/v1/patient/insurance/" in url}
    assert keys["patient/insurance/mobile-orders"] and keys[f"patient/insurance/settlements/{settlement_id}/pay"]
    assert any(url.endswith(f"/v1/sandbox/insurance/settlements/{settlement_id}/cashier") for url, _ in sent)

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert {p["method"]: p["amount_fen"] for p in settled["bill"]["payments"] if p["kind"] == "payment"} == {
        "nhsa_mobile": 500,
        "insurance_pooled": 7200,
        "insurance_personal": 4800,
    }
    await page.click("a[data-tab=home]")
    await page.click("#receipts-link")
    await page.wait_for_selector(".receipt")
    text = await page.text_content(".receipt")
    for part in ("医保统筹基金 ¥72.00", "医保个人账户 ¥48.00", "医保移动支付（现金部分） ¥5.00"):
        assert part in text, text


async def test_two_children_one_phone_choose_in_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    phone = random_phone()
    children = {}
    for name in ("张小明", "张小红"):
        r = await http.post(
            "/v1/his/patients",
            headers=HIS,
            json={"card_type": "insurance_card", "card_no": uid("SI"), "name": name, "insured_locally": True},
        )
        children[name] = r.json()["patient_id"]
        await asyncio.sleep(1.1)  # codes to one phone are at least a second apart here
        await clinic.enrol(children[name], phone)
    await clinic.register(children["张小红"], fee=800)
    await page.goto("/app/")
    await page.wait_for_selector("text=登录医后付")
    await expect(page.locator("#tabs")).to_be_hidden()  # signed out: no tab bar
    await sign_in(page, http, phone)
    await page.wait_for_selector("text=选择就诊人")
    # signed in but no patient chosen yet: nothing behind the tabs is theirs to see
    await expect(page.locator("#tabs")).to_be_hidden()
    assert [await b.get_attribute("data-patient") for b in await page.query_selector_all("button[data-patient]")] == [
        children["张小明"],
        children["张小红"],
    ]
    await shot(page, "10-profiles")
    await page.click(f"button[data-patient='{children['张小红']}']")
    await page.wait_for_selector("#service")
    assert (await page.text_content("#who") or "").startswith("张*红")
    await page.click("a[data-tab=visits]")
    await page.wait_for_selector("text=呼吸内科")
    await page.click("a[data-tab=home]")
    await page.click("#switch")
    await page.click(f"button[data-patient='{children['张小明']}']")
    await expect(page.locator("#who")).to_have_text(re.compile("^张\\*明"))
    await page.click("a[data-tab=visits]")
    await page.wait_for_selector("text=暂无就诊记录")  # the other child's visit is not shown
    await page.click("a[data-tab=home]")
    await page.click("#logout")
    await page.wait_for_selector("text=登录医后付")
    await expect(page.locator("#tabs")).to_be_hidden()
    await expect(page.locator("#who")).to_have_text("")  # the last patient's name is gone


async def test_a_dispute_from_the_app(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    """An unpaid visit offers 申诉; the app shows the dispute while open, then its outcome."""
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=3000))["visit_id"]
    await clinic.event(visit_id, "discharged")
    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    await page.goto(f"/app/#/visit/{visit_id}")
    await page.wait_for_selector("#dispute-send")
    await page.click("#dispute-send")
    await expect(page.locator("#dispute-err")).to_have_text("请写明申诉理由")
    await page.fill("#dispute-reason", "挂号费收了两次")
    await page.click("#dispute-send")
    await expect(page.locator("#dispute-status")).to_contain_text("申诉处理中", timeout=15000)
    assert await page.query_selector("#dispute-send") is None  # one open dispute at a time
    await expect(page.locator("#next")).to_contain_text("申诉处理中")  # the next step says the visit is on hold
    await shot(page, "11-dispute")
    disputes = (await http.get(f"/v1/ops/disputes?status=open&visit_id={visit_id}", headers=OPS)).json()
    assert [d["reason"] for d in disputes] == ["挂号费收了两次"]
    r = await http.post(
        f"/v1/ops/disputes/{disputes[0]['dispute_id']}/resolve",
        json={"outcome": "upheld", "note": "重复收费，已减免"},
        headers={**OPS, "X-Operator-Id": "finance-1"},
    )
    assert r.status_code == 200, r.text
    await page.reload()
    await expect(page.locator("#dispute-status")).to_contain_text("申诉成立", timeout=15000)
    assert await page.text_content("#waived") == "¥30.00"


async def test_what_is_owed_on_home_bill_and_visit(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    """Home shows the amount due, the deadline and what comes next; the bill keeps a visit in
    progress apart from the payable one and pays only that; a settled visit says so; a visit
    has a back button; the timeline never runs backwards though the HIS's clock is behind."""
    patient_id, phone = await clinic.enrolled_patient()
    owed = (await clinic.register(patient_id, fee=25850))["visit_id"]
    await clinic.event(owed, "discharged")
    await until(fetcher(http, owed), lambda v: v["payment_status"] != "open")
    # arrears with the deadline a day away: a status that holds still for the screens
    r = await act(http, owed, {"action": "extend_deadline", "reason": "test", "due_at": a_day_away()})
    assert r.status_code == 200, r.text
    running = (await clinic.register(patient_id, fee=500))["visit_id"]
    # the HIS's clock runs behind ours: its check-in is stamped before our registration
    behind = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    await clinic.event(running, "checked_in", channel="app", occurred_at=behind)
    arrears = await until(fetcher(http, owed), lambda v: v["payment_status"] == "arrears")

    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    await expect(page.locator("#due")).to_have_text("¥258.50")  # the visit in progress is not due yet
    await expect(page.locator("#deadline")).to_contain_text(shown(arrears["due_at"]))
    await expect(page.locator("#advice")).to_contain_text("锁定医保卡")  # what happens if it stays unpaid
    assert "可直接挂号就诊" not in await page.text_content("main")
    await shot(page, "1-home")

    await page.click("a[data-tab=visits]")
    await page.click(f"a[href='#/visit/{owed}']")
    await expect(page.locator("#next")).to_contain_text("欠费")
    await expect(page.locator("#next")).to_contain_text(shown(arrears["due_at"]))
    await page.click("#back")
    await page.click(f"a[href='#/visit/{running}']")
    await expect(page.locator("#stage")).to_have_text("已签到，候诊中")
    items = await page.locator("#timeline li").all_text_contents()
    assert [i.split(" · ")[0] for i in items] == ["挂号", "签到"]
    times = [i.split(" · ")[1] for i in items]
    assert times[1] == shown(behind)  # the HIS's time as recorded
    assert times == sorted(times)  # registration shown no later than the check-in after it

    await page.click("a[data-tab=bill]")
    await expect(page.locator("#total")).to_have_text("¥258.50")
    await expect(page.locator(f"#payable [data-visit='{owed}']")).to_be_visible()
    await expect(page.locator(f"#in-progress [data-visit='{running}']")).to_contain_text("离院后")
    assert await page.locator(f"#payable [data-visit='{running}']").count() == 0
    await shot(page, "3-bill")
    async with page.expect_request(lambda q: q.url.endswith("/v1/patient/payments") and q.method == "POST") as asked:
        await page.click("button[data-channel=sandbox]")
    assert (await asked.value).post_data_json == {"channel": "sandbox", "visit_ids": [owed]}
    await page.wait_for_selector("#confirm")
    assert "¥258.50" in await page.text_content("main")
    await page.click("#confirm")
    await page.wait_for_selector("#paid", timeout=15000)
    await until(fetcher(http, owed), lambda v: v["payment_status"] == "settled")
    assert (await fetcher(http, running)())["bill"]["paid_fen"] == 0  # the visit in progress was not paid

    await page.goto(f"/app/#/visit/{owed}")
    await expect(page.locator("#next")).to_contain_text("已结清")
    assert "付清" not in (await page.text_content("#next") or "").replace("已结清", "")
    await page.click("a[data-tab=home]")
    await expect(page.locator("#service")).to_have_text("正常")
    assert await page.locator("#due").count() == 0


async def test_the_next_step_follows_the_payment_status(page: Any, http: httpx.AsyncClient, clinic: Clinic) -> None:
    """Arrears, defaulted, written off and on hold: each visit says its own next step."""
    patient_id, phone = await clinic.enrolled_patient()
    ids = {}
    for name, fee in (("arrears", 1000), ("defaulted", 2000), ("written_off", 3000), ("hold", 4000)):
        ids[name] = (await clinic.register(patient_id, fee=fee))["visit_id"]
        await clinic.event(ids[name], "discharged")
    for visit_id in ids.values():
        await until(fetcher(http, visit_id), lambda v: v["payment_status"] != "open")
    r = await act(http, ids["arrears"], {"action": "extend_deadline", "reason": "test", "due_at": a_day_away()})
    assert r.status_code == 200, r.text
    r = await act(http, ids["hold"], {"action": "pause_sanctions", "reason": "家属来电核实中"})
    assert r.status_code == 200, r.text
    r = await act(http, ids["written_off"], {"action": "write_off", "reason": "hardship"})
    assert r.status_code == 202, r.text
    r = await http.post(
        f"/v1/ops/approvals/{r.json()['approval_id']}",
        json={"decision": "approve", "reason": "seen"},
        headers={**OPS, "X-Operator-Id": "head-1"},
    )
    assert r.status_code == 200, r.text
    arrears = await until(fetcher(http, ids["arrears"]), lambda v: v["payment_status"] == "arrears")
    await until(fetcher(http, ids["defaulted"]), lambda v: v["payment_status"] == "defaulted" and v["card_locked"])

    await sign_in(page, http, phone)
    await page.wait_for_selector("#service")
    await expect(page.locator("#due")).to_have_text("¥70.00")  # written off: not asked for
    await expect(page.locator("#advice")).to_contain_text("医保卡已锁定")
    expected = {
        "arrears": ["欠费", shown(arrears["due_at"])],
        "defaulted": ["医保卡已锁定", "征信"],
        "written_off": ["已核销", "无需再付款"],
        "hold": ["暂缓催收"],
    }
    for name, texts in expected.items():
        await page.goto(f"/app/#/visit/{ids[name]}")
        await expect(page.locator("#stage")).to_have_text("已离院")
        for text in texts:
            await expect(page.locator("#next")).to_contain_text(text)
        assert "7 天内" not in (await page.text_content("#next") or "")
    assert "核实中" not in await page.text_content("main")  # the operator's note stays inside the hospital
    bill = await page.evaluate(
        "() => fetch('/v1/patient/bill', {headers: {authorization: "
        "`Bearer ${localStorage.getItem('yhf.token')}`}}).then((r) => r.json())"
    )
    held = {v["visit_id"]: v["hold"] for v in bill["visits"]}
    assert held[ids["hold"]]["kind"] == "operator" and held[ids["hold"]]["reason"] == "暂缓催收"
    assert ids["written_off"] not in held  # a written-off debt is not asked for
    await page.click("a[data-tab=bill]")
    await expect(page.locator("#total")).to_have_text("¥70.00")
    await expect(page.locator(f"#payable [data-visit='{ids['hold']}']")).to_contain_text("暂缓催收")
