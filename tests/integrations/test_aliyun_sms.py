"""Aliyun SMS through the real SDK (signed RPC requests over HTTP) to the Dysms simulator, with
the outbox (db/sms.py) keeping our record of each message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SmsMessage
from db.sms import OutboxSender
from integrations.aliyun_sms import AliyunSms, SmsRejected, SmsThrottled
from integrations.sms import OutgoingSms
from simulators.dysms import Base as DysmsBase, Dysms, dysms_simulator_app, rpc_signature
from simulators.store import Store
from tests.flows import random_phone
from tests.support import PII, rows, served, uid

AK, SECRET = "LTAI5tYhfTestKey", "test-secret-0123456789"


@pytest.fixture(scope="module")
def dysms() -> Iterator[tuple[str, Dysms]]:
    app = dysms_simulator_app({AK: SECRET})
    with served(app) as endpoint:
        yield endpoint, app.state.dysms
    app.state.dysms.store.close()


def sender(factory: async_sessionmaker[AsyncSession], endpoint: str, secret: str = SECRET) -> OutboxSender:
    aliyun = AliyunSms(access_key_id=AK, access_key_secret=secret, endpoint=endpoint, protocol="http")
    return OutboxSender(factory, PII, aliyun)


async def test_send_through_the_sdk(dysms, factory) -> None:
    endpoint, state = dysms
    phone = random_phone()
    msg = OutgoingSms(
        idempotency_key=uid("k"),
        phone=phone,
        template="dunning",
        params={"amount": "45.00", "deadline": "3月8日 10:00"},
        patient_id="p1",
        visit_id="v1",
    )
    result = await sender(factory, endpoint).send(msg)
    assert not result.duplicate
    got = state.received(phone)
    assert len(got) == 1 and got[0]["template_code"] == "SMS_480100004" and "45.00元" in got[0]["text"]
    assert got[0]["out_id"] == str(result.message_id)  # Aliyun's receipt names our outbox row
    again = await sender(factory, endpoint).send(msg)
    assert again.duplicate and len(state.received(phone)) == 1
    [row] = [r for r in await rows(factory, SmsMessage, visit_id="v1") if r.idempotency_key == msg.idempotency_key]
    assert row.status == "sent" and row.phone_masked.endswith(phone[-4:]) and phone not in str(row.params)


async def test_wrong_secret_is_caught_by_the_signature(dysms, factory) -> None:
    endpoint, _ = dysms
    msg = OutgoingSms(
        idempotency_key=uid("k"), phone=random_phone(), template="payment_received", params={"amount": "1.00"}
    )
    with pytest.raises(SmsRejected) as err:
        await sender(factory, endpoint, secret="not-the-secret").send(msg)
    assert err.value.code == "SignatureDoesNotMatch"


async def test_illegal_number_is_final(dysms, factory) -> None:
    endpoint, _ = dysms
    msg = OutgoingSms(idempotency_key=uid("k"), phone="12345", template="payment_received", params={"amount": "1.00"})
    with pytest.raises(SmsRejected) as err:
        await sender(factory, endpoint).send(msg)
    assert err.value.code == "isv.MOBILE_NUMBER_ILLEGAL"
    with pytest.raises(SmsRejected):  # recorded as failed: not sent again
        await sender(factory, endpoint).send(msg)


async def test_verification_codes_are_flow_controlled(dysms, factory) -> None:
    endpoint, _ = dysms
    phone = random_phone()
    s = sender(factory, endpoint)
    await s.send(
        OutgoingSms(idempotency_key=uid("k"), phone=phone, template="verification_code", params={"code": "123456"})
    )
    with pytest.raises(SmsThrottled) as err:
        await s.send(
            OutgoingSms(idempotency_key=uid("k"), phone=phone, template="verification_code", params={"code": "654321"})
        )
    assert err.value.code == "isv.BUSINESS_LIMIT_CONTROL"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"TemplateCode": "SMS_000"}, "isv.SMS_TEMPLATE_ILLEGAL"),
        ({"SignName": "别人的签名"}, "isv.SMS_SIGNATURE_ILLEGAL"),
        ({"TemplateParam": '{"amount":"1.00"}'}, "isv.TEMPLATE_MISSING_PARAMETERS"),
        ({"TemplateParam": '{"amount":"1.00","deadline":"x","extra":"y"}'}, "isv.TEMPLATE_PARAMS_ILLEGAL"),
        ({"PhoneNumbers": "1380013800"}, "isv.MOBILE_NUMBER_ILLEGAL"),
    ],
)
async def test_simulator_checks_parameters(dysms, change: dict[str, str], code: str) -> None:
    endpoint, _ = dysms
    params = {
        "AccessKeyId": AK,
        "Action": "SendSms",
        "Format": "JSON",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": uid("n"),
        "SignatureVersion": "1.0",
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "Version": "2017-05-25",
        "PhoneNumbers": random_phone(),
        "SignName": "医后付",
        "TemplateCode": "SMS_480100004",
        "TemplateParam": '{"amount":"1.00","deadline":"x"}',
        **change,
    }
    params["Signature"] = rpc_signature("GET", params, SECRET)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://{endpoint}/", params=params)
    assert r.json()["Code"] == code


async def test_tampered_or_replayed_requests(dysms) -> None:
    endpoint, _ = dysms
    params = {
        "AccessKeyId": AK,
        "Action": "SendSms",
        "Format": "JSON",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": uid("n"),
        "SignatureVersion": "1.0",
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "Version": "2017-05-25",
        "PhoneNumbers": random_phone(),
        "SignName": "医后付",
        "TemplateCode": "SMS_480100006",
        "TemplateParam": '{"amount":"1.00"}',
    }
    params["Signature"] = rpc_signature("GET", params, SECRET)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{endpoint}/", params=params)).json()["Code"] == "OK"
        assert (await http.get(f"http://{endpoint}/", params=params)).json()["Code"] == "SignatureNonceUsed"
        tampered = {**params, "SignatureNonce": uid("n")}
        assert (await http.get(f"http://{endpoint}/", params=tampered)).json()["Code"] == "SignatureDoesNotMatch"
        old = {**params, "SignatureNonce": uid("n"), "Timestamp": "2020-01-01T00:00:00Z"}
        old["Signature"] = rpc_signature("GET", {k: v for k, v in old.items() if k != "Signature"}, SECRET)
        assert (await http.get(f"http://{endpoint}/", params=old)).json()["Code"] == "InvalidTimeStamp.Expired"


async def test_the_reminder_after_default_tells_what_happened(dysms, factory) -> None:
    endpoint, state = dysms
    phone = random_phone()
    msg = OutgoingSms(idempotency_key=uid("k"), phone=phone, template="dunning_defaulted", params={"amount": "45.00"})
    await sender(factory, endpoint).send(msg)
    [got] = state.received(phone)
    assert got["template_code"] == "SMS_480100011"
    assert "45.00元" in got["text"] and "医保卡已锁定" in got["text"] and "自动解锁" in got["text"]
    assert "前支付" not in got["text"] and "逾期将" not in got["text"]  # no deadline already past
    with pytest.raises(ValueError):  # a deadline is not one of its parameters
        await sender(factory, endpoint).send(
            OutgoingSms(
                idempotency_key=uid("k"),
                phone=phone,
                template="dunning_defaulted",
                params={"amount": "1.00", "deadline": "3月8日 10:00"},
            )
        )


async def test_dysms_keeps_its_messages_and_flow_control_in_its_own_file(tmp_path, factory) -> None:
    """Restarted on the same file, the simulator still lists what it accepted and still counts
    the verification codes already sent to a phone."""
    phone, path = random_phone(), tmp_path / "dysms.db"
    for attempt in range(2):
        app = dysms_simulator_app({AK: SECRET}, store=Store(DysmsBase.metadata, path))
        with served(app) as endpoint:
            code = OutgoingSms(
                idempotency_key=uid("k"), phone=phone, template="verification_code", params={"code": "123456"}
            )
            if attempt == 0:
                await sender(factory, endpoint).send(code)
            else:
                with pytest.raises(SmsThrottled):
                    await sender(factory, endpoint).send(code)
                async with httpx.AsyncClient() as http:
                    listed = (await http.get(f"http://{endpoint}/_sandbox/messages", params={"phone": phone})).json()
                assert [m["template"] for m in listed] == ["verification_code"]
        app.state.dysms.store.close()


class LostAnswer:
    """Aliyun reached, its answer to SendSms lost: the text went, the row stays `sending`."""

    def __init__(self, inner: AliyunSms) -> None:
        self.inner = inner

    async def deliver(self, msg: OutgoingSms, *, out_id: str) -> Any:
        await self.inner.deliver(msg, out_id=out_id)
        raise TimeoutError("the answer never came")

    async def find(self, msg: OutgoingSms, *, out_id: str, days: list[Any]) -> Any:
        raise AssertionError("a first try does not look")


@pytest.mark.parametrize(
    ("receipt", "status"),
    [(None, "sent"), ((1, ""), "sent"), ((2, "IC:0015"), "failed")],
    ids=["delivered", "waiting", "carrier_failed"],
)
async def test_a_retry_after_a_lost_answer_reads_the_carriers_receipt(
    dysms, factory, receipt: tuple[int, str] | None, status: str
) -> None:
    """QuerySendDetails' SendStatus: 3 delivered and 1 waiting for the receipt are the text sent;
    2, the carrier failed it, is not: the row is `failed` (never notice evidence) and the retry
    raises SmsRejected with the carrier's code, texting no one again."""
    endpoint, state = dysms
    phone = random_phone()
    if receipt is not None:
        state.receipts[phone] = receipt
    msg = OutgoingSms(idempotency_key=uid("k"), phone=phone, template="payment_received", params={"amount": "1.00"})
    aliyun = AliyunSms(access_key_id=AK, access_key_secret=SECRET, endpoint=endpoint, protocol="http")
    with pytest.raises(TimeoutError):
        await OutboxSender(factory, PII, LostAnswer(aliyun)).send(msg)
    [detail] = await aliyun.details(phone, datetime.now(ZoneInfo("Asia/Shanghai")).date())
    assert (detail["SendStatus"], detail["ErrCode"]) == (receipt or (3, "DELIVERED"))
    assert (detail["ReceiveDate"] == "") == (receipt is not None and receipt[0] == 1)
    if status == "failed":
        with pytest.raises(SmsRejected) as err:
            await sender(factory, endpoint).send(msg)
        assert err.value.code == "IC:0015"
        with pytest.raises(SmsRejected):  # and it stays refused, asking no one
            await sender(factory, endpoint).send(msg)
    else:
        assert (await sender(factory, endpoint).send(msg)).duplicate
    assert len(state.received(phone)) == 1
    [row] = [r for r in await rows(factory, SmsMessage) if r.idempotency_key == msg.idempotency_key]
    assert row.status == status
    assert (row.accepted_at is not None) == (status == "sent")
