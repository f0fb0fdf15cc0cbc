"""Aliyun SMS through the real SDK (signed RPC requests over HTTP) to the Dysms simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SmsMessage
from integrations.aliyun_sms import AliyunSmsSender, SmsRejected, SmsThrottled, dysms_simulator_app, rpc_signature
from integrations.sms import OutgoingSms
from tests.flows import random_phone
from tests.support import PII, rows, served, uid

AK, SECRET = "LTAI5tYhfTestKey", "test-secret-0123456789"


@pytest.fixture(scope="module")
def dysms() -> Iterator[tuple[str, object]]:
    app = dysms_simulator_app({AK: SECRET})
    with served(app) as endpoint:
        yield endpoint, app.state.dysms


def sender(factory: async_sessionmaker[AsyncSession], endpoint: str, secret: str = SECRET) -> AliyunSmsSender:
    return AliyunSmsSender(factory, PII, access_key_id=AK, access_key_secret=secret, endpoint=endpoint,
                           protocol="http")


async def test_send_through_the_sdk(dysms, factory) -> None:  # type: ignore[no-untyped-def]
    endpoint, state = dysms
    phone = random_phone()
    msg = OutgoingSms(idempotency_key=uid("k"), phone=phone, template="dunning",
                      params={"amount": "45.00", "deadline": "3月8日 10:00"}, patient_id="p1", visit_id="v1")
    result = await sender(factory, endpoint).send(msg)
    assert not result.duplicate
    got = [m for m in state.received if m["phone"] == phone]
    assert len(got) == 1 and got[0]["template_code"] == "SMS_480100004" and "45.00元" in got[0]["text"]
    again = await sender(factory, endpoint).send(msg)
    assert again.duplicate and len([m for m in state.received if m["phone"] == phone]) == 1
    [row] = [r for r in await rows(factory, SmsMessage, visit_id="v1") if r.idempotency_key == msg.idempotency_key]
    assert row.status == "sent" and row.phone_masked.endswith(phone[-4:]) and phone not in str(row.params)


async def test_wrong_secret_is_caught_by_the_signature(dysms, factory) -> None:  # type: ignore[no-untyped-def]
    endpoint, state = dysms
    msg = OutgoingSms(idempotency_key=uid("k"), phone=random_phone(), template="payment_received",
                      params={"amount": "1.00"})
    with pytest.raises(SmsRejected) as err:
        await sender(factory, endpoint, secret="not-the-secret").send(msg)
    assert err.value.code == "SignatureDoesNotMatch"


async def test_illegal_number_is_final(dysms, factory) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = dysms
    msg = OutgoingSms(idempotency_key=uid("k"), phone="12345", template="payment_received", params={"amount": "1.00"})
    with pytest.raises(SmsRejected) as err:
        await sender(factory, endpoint).send(msg)
    assert err.value.code == "isv.MOBILE_NUMBER_ILLEGAL"
    with pytest.raises(SmsRejected):  # recorded as failed: not sent again
        await sender(factory, endpoint).send(msg)


async def test_verification_codes_are_flow_controlled(dysms, factory) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = dysms
    phone = random_phone()
    s = sender(factory, endpoint)
    await s.send(OutgoingSms(idempotency_key=uid("k"), phone=phone, template="verification_code",
                             params={"code": "123456"}))
    with pytest.raises(SmsThrottled) as err:
        await s.send(OutgoingSms(idempotency_key=uid("k"), phone=phone, template="verification_code",
                                 params={"code": "654321"}))
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
async def test_simulator_checks_parameters(dysms, change: dict[str, str], code: str) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = dysms
    params = {"AccessKeyId": AK, "Action": "SendSms", "Format": "JSON", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": uid("n"), "SignatureVersion": "1.0",
              "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "Version": "2017-05-25",
              "PhoneNumbers": random_phone(), "SignName": "医后付", "TemplateCode": "SMS_480100004",
              "TemplateParam": '{"amount":"1.00","deadline":"x"}', **change}
    params["Signature"] = rpc_signature("GET", params, SECRET)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://{endpoint}/", params=params)
    assert r.json()["Code"] == code


async def test_tampered_or_replayed_requests(dysms) -> None:  # type: ignore[no-untyped-def]
    endpoint, _ = dysms
    params = {"AccessKeyId": AK, "Action": "SendSms", "Format": "JSON", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": uid("n"), "SignatureVersion": "1.0",
              "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "Version": "2017-05-25",
              "PhoneNumbers": random_phone(), "SignName": "医后付", "TemplateCode": "SMS_480100006",
              "TemplateParam": '{"amount":"1.00"}'}
    params["Signature"] = rpc_signature("GET", params, SECRET)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{endpoint}/", params=params)).json()["Code"] == "OK"
        assert (await http.get(f"http://{endpoint}/", params=params)).json()["Code"] == "SignatureNonceUsed"
        tampered = {**params, "SignatureNonce": uid("n")}
        assert (await http.get(f"http://{endpoint}/", params=tampered)).json()["Code"] == "SignatureDoesNotMatch"
        old = {**params, "SignatureNonce": uid("n"), "Timestamp": "2020-01-01T00:00:00Z"}
        old["Signature"] = rpc_signature("GET", {k: v for k, v in old.items() if k != "Signature"}, SECRET)
        assert (await http.get(f"http://{endpoint}/", params=old)).json()["Code"] == "InvalidTimeStamp.Expired"

