"""The access log (YHF_ACCESS_LOG, on by default): one line per request with the method, the
path without its query, the status, the time taken and the request id; a phone or ID number
in a path is masked, and nothing of the body or query is written."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

import observability
from config import Settings
from tests.api.test_edges import client
from tests.flows import random_id_number, random_phone
from tests.support import free_port

HIS = {"Authorization": "Bearer dev-his-key"}
LINE = re.compile(r"^(GET|POST|PUT|DELETE) (/\S*) (\d{3}|-) \d+ms$")


@asynccontextmanager
async def logged(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, io.StringIO]]:
    """The app in-process (no Temporal: the requests here never reach it), its logs as JSON lines."""
    nowhere = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    logs = io.StringIO()
    try:
        async with client(nowhere) as http:
            observability.setup_logging("json", "INFO", stream=logs)  # after create_app set up its own
            yield http, logs
    finally:
        observability.setup_logging("text", "INFO")


def access_lines(logs: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["logger"] == "yihoufu.access"]


async def test_each_request_is_one_line_with_its_request_id_and_no_personal_data(settings: Settings) -> None:
    phone, id_number = random_phone(), random_id_number()
    async with logged(settings) as (http, logs):
        calls: list[tuple[str, str, Any, bool, int]] = [  # method, url, body, with the HIS key, status
            ("GET", "/openapi.json", None, True, 200),
            ("POST", "/v1/his/patients", {"card_type": "id_card", "phone": phone}, True, 422),
            ("GET", f"/v1/his/patients/{phone}?phone={phone}&id={id_number}", None, True, 404),
            ("PUT", f"/v1/sandbox/credit-scores/{id_number}", {"phone": phone}, True, 422),
            ("GET", f"/v1/his/visits/{id_number}", None, False, 401),  # refused at the edge
        ]
        for n, (method, url, body, auth, status) in enumerate(calls):
            headers = {"X-Request-Id": f"req-access-{n}", **(HIS if auth else {})}
            r = await http.request(method, url, headers=headers, json=body)
            assert r.status_code == status, (url, r.text)
    text = logs.getvalue()
    assert phone not in text and id_number not in text and phone[3:] not in text
    lines = access_lines(logs)
    assert [line["request_id"] for line in lines] == [f"req-access-{n}" for n in range(len(calls))]
    for line, (method, url, _, _, status) in zip(lines, calls, strict=True):
        match = LINE.match(line["message"])
        assert match, line
        assert match[1] == method and match[3] == str(status) and "?" not in match[2]
        assert match[2] == url.split("?")[0].replace(phone, "***").replace(id_number, "***")
        assert line["level"] == "info"


async def test_the_access_log_can_be_turned_off(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setenv("YHF_ACCESS_LOG", "0")
    assert Settings(sandbox=True).access_log is False  # the setting, from the environment
    async with logged(settings.model_copy(update={"access_log": False})) as (http, logs):
        assert (await http.get("/openapi.json")).status_code == 200
    assert access_lines(logs) == []
