"""Temporal UI shows a visit's encrypted history decrypted, for real: a stack as `make dev` runs it
(its UI pointed at the API's codec endpoint, payloads encrypted with a key), a visit with a drug,
and the dev server's own UI in headless Chromium. The browser asks /v1/ops/codec/decode itself,
across origins (CORS), and shows what Temporal itself only holds as ciphertext."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Response, async_playwright
from temporalio.client import Client

from devstack import Stack, temporal_cli
from tests.flows import Clinic, item
from tests.support import free_port, fresh_database
from tests.workflows.test_codec_history import TEST_PAYLOAD_KEY

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HIS = {"Authorization": "Bearer dev-his-key"}
DRUG = "头孢克肟分散片-ui"


@pytest.fixture
async def ui_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with fresh_database(tmp_path) as url:
        stack = Stack(
            data_dir=tmp_path / "data",
            api_port=free_port(),
            temporal_port=free_port(),
            ui_port=free_port(),
            wechat_port=free_port(),
            alipay_port=free_port(),
            payload_key=TEST_PAYLOAD_KEY,
            env={"YHF_DATABASE_URL": url},
            log_dir=tmp_path / "logs",
        )
        await asyncio.to_thread(stack.start)
        try:
            yield stack
        finally:
            await asyncio.to_thread(stack.stop)


async def a_visit_with_a_drug(stack: Stack) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        clinic = Clinic.over(http, HIS)
        patient_id, _ = await clinic.enrolled_patient()
        visit_id = (await clinic.register(patient_id))["visit_id"]
        await clinic.event(visit_id, "checked_in", channel="app")
        await clinic.event(visit_id, "called")
        await clinic.event(visit_id, "consultation_started")
        await clinic.event(
            visit_id, "prescribed", items=[item("rx", "drug", 2718, name=DRUG)], skin_test_required=False
        )
    return patient_id, visit_id


async def test_temporal_ui_shows_the_history_decrypted(ui_stack: Stack) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium")
    ui = f"http://127.0.0.1:{ui_stack.ui_port}"
    async with httpx.AsyncClient() as http:
        codec = (await http.get(f"{ui}/api/v1/settings")).json()["Codec"]
    assert codec["Endpoint"] == f"{ui_stack.api_url}/v1/ops/codec"

    patient_id, visit_id = await a_visit_with_a_drug(ui_stack)
    plain = await Client.connect(f"127.0.0.1:{ui_stack.temporal_port}")  # no codec: what Temporal holds
    handle = plain.get_workflow_handle(f"visit-{visit_id}")
    history = await handle.fetch_history()
    stored = b"".join(event.SerializeToString() for event in history.events)
    assert b"binary/encrypted" in stored
    assert DRUG.encode() not in stored and json.dumps(DRUG)[1:-1].encode() not in stored and b"2718" not in stored
    run_id = (await handle.describe()).run_id

    decoded: list[Response] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("response", lambda r: decoded.append(r) if urlsplit(r.url).path == "/v1/ops/codec/decode" else None)
            await page.goto(f"{ui}/namespaces/default/workflows/visit-{visit_id}/{run_id}/history")
            await page.get_by_text("registration_fee_fen").first.wait_for(timeout=30_000)
            # every event opened: the drug of the `prescribed` update, decrypted by the codec
            await page.get_by_role("button", name=re.compile("expand", re.IGNORECASE)).first.click()
            await page.get_by_text(DRUG).first.wait_for(timeout=30_000)
            body = await page.content()
        finally:
            await browser.close()
    assert decoded and all(r.status == 200 for r in decoded)
    assert decoded[0].headers.get("access-control-allow-origin") == ui
    assert patient_id in body and DRUG in body and "2718" in body

    # the CLI, through the same endpoint (as README says), and without it
    show = [
        temporal_cli(),
        "workflow",
        "show",
        "--output",
        "json",
        "-w",
        f"visit-{visit_id}",
        "--address",
        f"127.0.0.1:{ui_stack.temporal_port}",
    ]
    codec_args = ["--codec-endpoint", f"{ui_stack.api_url}/v1/ops/codec", "--codec-auth", "Bearer dev-ops-key"]
    for args, readable in ((show + codec_args, True), (show, False)):
        out = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60, check=True)
        assert (DRUG in payload_texts(json.loads(out.stdout))) is readable


def payload_texts(node: Any) -> str:
    """The JSON of every payload in the CLI's JSON output (its `data`, base64), as text."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("data"), str) and "metadata" in value:
                raw = base64.b64decode(value["data"])
                try:
                    found.append(json.dumps(json.loads(raw), ensure_ascii=False))
                except ValueError:
                    found.append(repr(raw))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(node)
    return "\n".join(found)
