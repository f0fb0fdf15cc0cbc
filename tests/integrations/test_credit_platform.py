"""The credit platform's protocol: a record carries the debt only (征信业管理条例 §14) and a
negative report the evidence of its notice (§15); the simulated platform refuses anything
else, as the real one does. Over ASGI, no database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from integrations.credit_platform import (
    FIELDS,
    CallbackRejected,
    CallbackVerifier,
    CreditPlatformClient,
    CreditRecord,
    MessageIdKind,
    Notice,
    ObjectionAnswer,
    RecordStatus,
)
from integrations.gateway import GatewayError, SignedJsonClient
from integrations.inspection import SimulatorInspection
from integrations.signing import sign, signed_headers
from simulators import credit

SECRET = "credit-secret-for-tests"
AT = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)
NOTICE = Notice(
    sent_at=AT - timedelta(days=1, seconds=1),
    channel="sms",
    message_id="900619746936498440^0",
    message_id_kind=MessageIdKind.provider,
    template="pre_default",
)
REPORT = CreditRecord(
    kind="report",
    request_id="credit-report:v1",
    customer_ref="pat_1",
    account_no="v1",
    subject_name="张三丰",
    subject_id_number="11010519491231002X",
    creditor_code="H-0001",
    creditor_name="示范医院",
    amount_owed_fen=4500,
    visit_date=date(2026, 2, 28),
    due_date=date(2026, 3, 7),
    reported_at=AT,
    status=RecordStatus.reported,
    notice=NOTICE,
)


@pytest.fixture
async def platform() -> AsyncIterator[tuple[CreditPlatformClient, httpx.AsyncClient]]:
    app = credit.simulator_app({"hospital-1": SECRET}, notice_period=timedelta(days=1))
    async with httpx.AsyncClient(base_url="http://credit", transport=httpx.ASGITransport(app=app)) as http:
        yield CreditPlatformClient(http, app_id="hospital-1", secret=SECRET), http
    app.state.store.close()


async def received(http: httpx.AsyncClient, visit_id: str) -> list[dict[str, object]]:
    r = await http.get("_sandbox/records", params={"visit_id": visit_id})
    r.raise_for_status()
    return list(r.json())


async def refusal(client: CreditPlatformClient, record: CreditRecord) -> str:
    with pytest.raises(GatewayError) as err:
        await client.submit(record)
    assert not err.value.retryable
    return err.value.code


async def test_a_report_goes_out_with_the_allowed_fields_only(platform) -> None:
    client, http = platform
    assert set(REPORT.payload()) == FIELDS  # every allowed field, and no other
    record_id = await client.submit(REPORT)
    assert await client.submit(REPORT) == record_id  # a retry is the same record
    [seen] = await received(http, "v1")
    assert seen["received"] == {
        "request_id": "credit-report:v1",
        "customer_ref": "pat_1",
        "account_no": "v1",
        "subject_name": "张三丰",
        "subject_id_type": "id_card",
        "subject_id_number": "11010519491231002X",
        "creditor_code": "H-0001",
        "creditor_name": "示范医院",
        "amount_owed_fen": 4500,
        "visit_date": "2026-02-28",
        "due_date": "2026-03-07",
        "reported_at": AT.isoformat(),
        "status": "reported",
        "notice_sent_at": NOTICE.sent_at.isoformat(),
        "notice_channel": "sms",
        "notice_message_id": "900619746936498440^0",
        "notice_message_id_kind": "provider",
        "notice_template": "pre_default",
    }
    assert seen["record_id"] == record_id and seen["status"] == "reported"


async def test_the_platform_refuses_a_field_a_record_may_not_hold(platform) -> None:
    _, http = platform
    raw = SignedJsonClient(http, app_id="hospital-1", secret=SECRET)
    for extra in ({"department": "内科"}, {"doctor": "王医生"}, {"items": [{"name": "阿莫西林胶囊"}]}, {"dx": "J06"}):
        with pytest.raises(GatewayError) as err:
            await raw.post("/records/report", {**REPORT.payload(), **extra})
        assert err.value.code == "FieldNotAllowed" and not err.value.retryable
    assert await received(http, "v1") == []


async def test_a_negative_report_needs_a_notice_a_full_period_before(platform) -> None:
    client, http = platform
    assert await refusal(client, replace(REPORT, notice=None)) == "NoticeMissing"
    late = replace(NOTICE, sent_at=AT - timedelta(hours=23))
    assert await refusal(client, replace(REPORT, notice=late)) == "NoticeTooLate"
    assert await refusal(client, replace(REPORT, notice=replace(NOTICE, channel="carrier-pigeon"))) == (
        "InvalidParameter"
    )
    inbox = replace(NOTICE, message_id_kind=MessageIdKind.inbox)  # a text's id is no inbox message's
    assert await refusal(client, replace(REPORT, notice=inbox)) == "InvalidParameter"
    assert await received(http, "v1") == []
    # exactly the period before is enough; a correction carries no notice
    await client.submit(replace(REPORT, notice=replace(NOTICE, sent_at=AT - timedelta(days=1))))
    correction = replace(
        REPORT, kind="correction", request_id="credit-correction:v1", status=RecordStatus.corrected_paid, notice=None
    )
    assert await refusal(client, replace(correction, status=RecordStatus.reported)) == "InvalidParameter"
    await client.submit(correction)
    assert [r["kind"] for r in await received(http, "v1")] == ["report", "correction"]
    # nothing to correct on another account
    assert await refusal(client, replace(correction, request_id="c2", account_no="v2")) == "NoSuchReport"


async def test_deletion_and_objection_answers(platform) -> None:
    client, http = platform
    record_id = await client.submit(REPORT)
    await client.delete(request_id="x:1", record_id=record_id, reason="retention_expired", at=AT)
    await client.delete(request_id="x:1", record_id=record_id, reason="retention_expired", at=AT)  # a retry
    [seen] = await received(http, "v1")
    assert seen["deleted_at"] == AT.isoformat()
    with pytest.raises(GatewayError) as err:
        await client.delete(request_id="x:2", record_id="CR99999999", reason="retention_expired", at=AT)
    assert err.value.code == "NoSuchRecord"
    with pytest.raises(GatewayError) as err:
        await client.answer_objection(
            request_id="a", objection_id="OBJ1", answer=ObjectionAnswer.confirmed, record_id=None, at=AT
        )
    assert err.value.code == "NoSuchObjection"


async def test_scores_and_a_forged_signature(platform) -> None:
    client, http = platform
    assert await client.scores(id_number="11010519491231002X") == (None, None)
    await SimulatorInspection(bureau=None, credit=http).set_scores(
        "11010519491231002x", bank_score=120, sesame_score=None
    )
    assert await client.scores(id_number="11010519491231002X") == (120, None)
    forged = CreditPlatformClient(http, app_id="hospital-1", secret="guessed")
    with pytest.raises(GatewayError) as err:
        await forged.submit(REPORT)
    assert err.value.code == "SignatureDoesNotMatch"
    assert await received(http, "v1") == []


def test_the_platforms_calls_to_us_are_verified() -> None:
    now = 1_800_000_000.0
    verifier = CallbackVerifier(app_id="hospital-1", secret=SECRET, clock=lambda: now)
    body = json.dumps({"objection_id": "OBJ1"}).encode()
    path = "/v1/credit/objections"

    def headers(**over: str) -> dict[str, str]:
        signed = signed_headers("hospital-1", SECRET, "POST", path, body)
        signed["X-Timestamp"] = str(int(now))
        signed["X-Signature"] = sign(SECRET, "POST", path, signed["X-Timestamp"], signed["X-Nonce"], body)
        return {**signed, **over}

    verifier.verify(headers(), "POST", path, body)

    def code(h: dict[str, str], b: bytes = body) -> tuple[int, str]:
        with pytest.raises(CallbackRejected) as err:
            verifier.verify(h, "POST", path, b)
        return err.value.status, err.value.code

    assert code({}) == (401, "signature_missing")
    assert code(headers(**{"X-App-Id": "someone-else"})) == (403, "unknown_app")
    assert code(headers(**{"X-Timestamp": str(int(now) - 301)})) == (401, "request_stale")
    assert code(headers(), body + b" ") == (401, "invalid_signature")
    assert code(headers(**{"X-Signature": "AAAA"})) == (401, "invalid_signature")


def test_the_creditor_is_a_setting_and_the_sandboxs_is_refused_outside_it() -> None:
    from config import DEV_CREDITOR_CODE, Settings
    from tests.integrations.test_temporal_codec import key, real_secrets, spec

    real = real_secrets(payload_key=spec(("k1", key(1))))
    sandbox = Settings(sandbox=True)
    assert sandbox.credit_creditor() == (DEV_CREDITOR_CODE, sandbox.hospital_name)
    with pytest.raises(ValueError, match="YHF_CREDIT_CREDITOR_CODE"):
        Settings(sandbox=False, **real, credit_creditor_code=DEV_CREDITOR_CODE)
    with pytest.raises(ValueError, match="YHF_CREDIT_CREDITOR_CODE"):  # unset: the worker stops at start
        Settings(sandbox=False, **real).credit_creditor()
    given = Settings(sandbox=False, **real, credit_creditor_code="H-1", credit_creditor_name="某医院")
    assert given.credit_creditor() == ("H-1", "某医院")
