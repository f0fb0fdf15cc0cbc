"""§15 evidence over the real SMS path: the pre-default text goes out through Aliyun's SDK to the
Dysms simulator, the outbox keeps the BizId Dysms issued and when it accepted the text, and the
credit report names that BizId (QuerySendDetails finds the message by it); a retry whose first
answer was lost finds the text at Dysms by our OutId and does not text the patient again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from activities.notify import NotifyActivities
from db.models import AuditLog, Patient, SmsMessage
from db.sms import OutboxSender
from integrations.aliyun_sms import AliyunSms
from integrations.sms import OutgoingSms, SmsRejected
from simulators.dysms import Dysms, dysms_simulator_app
from tests.activities.test_credit import AT, Factory, acts, clinical_visit, received, report, run
from tests.flows import random_phone
from tests.integrations.test_aliyun_sms import LostAnswer
from tests.support import PII, rows, served, uid
from workflows import contracts as c

__all__ = ["acts"]  # the fixture, shared with the credit activities' tests

AK, SECRET = "LTAI5tYhfNoticeKey", "notice-secret-0123456789"


@pytest.fixture(scope="module")
def dysms() -> Iterator[tuple[str, Dysms]]:
    app = dysms_simulator_app({AK: SECRET})
    with served(app) as endpoint:
        yield endpoint, app.state.dysms
    app.state.dysms.store.close()


def aliyun(endpoint: str) -> AliyunSms:
    return AliyunSms(access_key_id=AK, access_key_secret=SECRET, endpoint=endpoint, protocol="http")


async def test_the_report_names_the_bizid_dysms_issued(acts: dict[str, Any], factory: Factory, simulators, dysms):
    endpoint, state = dysms
    patient_id, visit_id = await clinical_visit(factory)
    phone = random_phone()
    async with factory() as session, session.begin():
        patient = await session.get(Patient, patient_id)
        assert patient is not None
        patient.phone_cipher = PII.encrypt(phone)
    notify = NotifyActivities(factory, OutboxSender(factory, PII, aliyun(endpoint)), PII)
    sent_at = AT - timedelta(days=2)
    before = datetime.now(UTC)
    message_id = await run(
        notify.send_sms,
        c.SendSmsInput(
            idempotency_key=f"visit-{visit_id}:sms:pre_default",
            patient_id=patient_id,
            visit_id=visit_id,
            template="pre_default",
            params={"amount": "45.00", "deadline": "3月7日 23:59"},
            at=sent_at,
        ),
    )
    [text] = state.received(phone)
    biz_id = text["biz_id"]
    assert text["out_id"] == str(message_id) and biz_id.endswith("^0") and len(biz_id) == 20
    [row] = await rows(factory, SmsMessage, visit_id=visit_id)
    assert (row.status, row.provider_message_id) == ("sent", biz_id)
    assert row.accepted_at is not None and before <= row.accepted_at <= datetime.now(UTC)

    # Aliyun's query finds the message by its BizId (and only that one)
    day = datetime.fromtimestamp(text["at"], ZoneInfo("Asia/Shanghai")).date()
    [detail] = await aliyun(endpoint).details(phone, day, biz_id=biz_id)
    assert (detail["OutId"], detail["SendStatus"], detail["TemplateCode"]) == (str(message_id), 3, "SMS_480100008")
    assert await aliyun(endpoint).details(phone, day, biz_id="123456789012345678^0") == []

    await run(acts["report_credit"], report(patient_id, visit_id, notice_sent_at=sent_at))
    [seen] = await received(simulators, visit_id)
    assert (seen["received"]["notice_message_id"], seen["received"]["notice_message_id_kind"]) == (biz_id, "provider")
    assert seen["received"]["notice_sent_at"] == sent_at.isoformat()
    [entry] = [a for a in await rows(factory, AuditLog, subject_id=patient_id) if a.action == "credit_report"]
    assert (entry.detail["notice_message_id"], entry.detail["notice_message_id_kind"]) == (biz_id, "provider")


async def test_a_retry_after_a_lost_answer_does_not_text_twice(factory: Factory, dysms) -> None:
    """The first try reached Dysms but its answer was lost (the row stays `sending`): the retry
    finds the text at Dysms by our OutId, marks the row sent and sends nothing more."""
    endpoint, state = dysms
    phone = random_phone()
    message = OutgoingSms(idempotency_key=uid("k"), phone=phone, template="payment_received", params={"amount": "1.00"})

    class LostAnswer:
        def __init__(self) -> None:
            self.inner = aliyun(endpoint)

        async def deliver(self, msg: OutgoingSms, *, out_id: str) -> Any:
            await self.inner.deliver(msg, out_id=out_id)
            raise TimeoutError("the answer never came")

        async def find(self, msg: OutgoingSms, *, out_id: str, days: list[Any]) -> Any:
            return await self.inner.find(msg, out_id=out_id, days=days)

    with pytest.raises(TimeoutError):
        await OutboxSender(factory, PII, LostAnswer()).send(message)
    [row] = [r for r in await rows(factory, SmsMessage) if r.idempotency_key == message.idempotency_key]
    assert row.status == "sending"
    result = await OutboxSender(factory, PII, aliyun(endpoint)).send(message)
    assert result.duplicate and len(state.received(phone)) == 1
    [row] = [r for r in await rows(factory, SmsMessage) if r.idempotency_key == message.idempotency_key]
    assert row.status == "sent" and row.accepted_at is not None and row.provider_message_id is None


async def test_a_text_the_carrier_failed_is_not_the_notice(acts: dict[str, Any], factory: Factory, simulators, dysms):
    """The pre-default text went (its answer lost) but the carrier failed it (SendStatus 2): the
    retry finds it failed, the row is `failed`, and the report names the app's inbox, not it."""
    endpoint, state = dysms
    patient_id, visit_id = await clinical_visit(factory)
    phone = random_phone()
    state.receipts[phone] = (2, "IC:0015")
    now = datetime.now(UTC)
    sent_at = now - timedelta(days=2)  # Dysms answers QuerySendDetails for the last 30 days only
    message = OutgoingSms(
        idempotency_key=f"visit-{visit_id}:sms:pre_default",
        phone=phone,
        template="pre_default",
        params={"amount": "45.00", "deadline": "3月7日 23:59"},
        patient_id=patient_id,
        visit_id=visit_id,
        at=sent_at,
    )
    with pytest.raises(TimeoutError):
        await OutboxSender(factory, PII, LostAnswer(aliyun(endpoint))).send(message)
    with pytest.raises(SmsRejected, match="IC:0015"):
        await OutboxSender(factory, PII, aliyun(endpoint)).send(message)
    [row] = await rows(factory, SmsMessage, visit_id=visit_id)
    assert row.status == "failed" and len(state.received(phone)) == 1
    await run(acts["report_credit"], replace(report(patient_id, visit_id, notice_sent_at=sent_at), at=now))
    [seen] = await received(simulators, visit_id)
    assert seen["received"]["notice_message_id_kind"] == "inbox"
    assert seen["received"]["notice_message_id"] == f"visit-{visit_id}:sms:pre_default"
