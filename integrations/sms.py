"""SMS: the message templates (as registered with Aliyun, zh-CN) and the senders.

Every sender takes an idempotency key and sends a key once. `OutboxSender` is the
sandbox backend: it records the message where `GET /v1/sandbox/sms` can read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from string import Template
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SmsMessage
from db.pii import Pii, mask_phone

SIGN_NAME = "医后付"

# template name -> (Aliyun template code, text with ${params})
TEMPLATES: dict[str, tuple[str, str]] = {
    "verification_code": ("SMS_480100001", "您的验证码为${code}，5分钟内有效，请勿泄露给他人。"),
    "bill_ready": ("SMS_480100002", "您本次就诊费用${amount}元已记账，请在${deadline}前通过医后付完成支付。"),
    "arrears": ("SMS_480100003", "您的就诊费用${amount}元未在就诊当日支付，已转为欠费。请在${deadline}前支付，逾期将锁定医保卡并上报征信平台。"),
    "dunning": ("SMS_480100004", "提醒：您尚有就诊欠费${amount}元未支付，请在${deadline}前支付，逾期将锁定医保卡并上报征信平台。"),
    "pre_default": ("SMS_480100008", "您的就诊欠费${amount}元将于${deadline}逾期。逾期未付将锁定医保卡并上报征信平台，请尽快支付。"),
    "card_locked": ("SMS_480100005", "您的就诊欠费${amount}元已逾期，医保卡已锁定，欠费已上报征信平台。支付后自动解锁并更正。"),
    "payment_received": ("SMS_480100006", "已收到您的付款，本次就诊费用${amount}元已结清。"),
    "payment_received_unlocked": ("SMS_480100007", "已收到您的付款，就诊费用${amount}元已结清，医保卡已解锁，征信记录已更正。"),
    "refund_sent": ("SMS_480100009", "您的退费${amount}元已按原支付方式退回，请注意查收。"),
    "refund_at_window": ("SMS_480100010", "您有退费${amount}元，请携带就诊卡到医院收费窗口办理。"),
}


def render(template: str, params: dict[str, str]) -> str:
    _, text = TEMPLATES[template]
    return f"【{SIGN_NAME}】" + Template(text).substitute(params)


def template_params(template: str) -> set[str]:
    _, text = TEMPLATES[template]
    return {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)
            if m.group("named") or m.group("braced")}


@dataclass(frozen=True, kw_only=True)
class OutgoingSms:
    idempotency_key: str
    phone: str
    template: str
    params: dict[str, str] = field(default_factory=dict)
    patient_id: str | None = None
    visit_id: str | None = None
    at: datetime | None = None  # when the message was due to go out (default: now)


@dataclass(frozen=True, kw_only=True)
class SendResult:
    message_id: int
    duplicate: bool


class SmsSender(Protocol):
    async def send(self, message: OutgoingSms) -> SendResult: ...


class OutboxSender:
    """Sandbox: the outbox row is the delivery."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], pii: Pii) -> None:
        self._factory = factory
        self._pii = pii

    async def send(self, message: OutgoingSms) -> SendResult:
        if template_params(message.template) != set(message.params):
            raise ValueError(f"template {message.template} takes {sorted(template_params(message.template))}")
        text = render(message.template, message.params)
        row = SmsMessage(
            idempotency_key=message.idempotency_key,
            phone_hash=self._pii.lookup("phone", message.phone),
            phone_masked=mask_phone(message.phone),
            template=message.template,
            params=message.params,
            text=text,
            patient_id=message.patient_id,
            visit_id=message.visit_id,
            status="sent",
            created_at=message.at or datetime.now(timezone.utc),
        )
        try:
            async with self._factory() as session, session.begin():
                existing = await _by_key(session, message.idempotency_key)
                if existing is not None:
                    return SendResult(message_id=existing.id, duplicate=True)
                session.add(row)
        except IntegrityError:  # a concurrent retry won the race
            async with self._factory() as session:
                existing = await _by_key(session, message.idempotency_key)
                assert existing is not None
                return SendResult(message_id=existing.id, duplicate=True)
        return SendResult(message_id=row.id, duplicate=False)


async def _by_key(session: AsyncSession, key: str) -> SmsMessage | None:
    return await session.scalar(select(SmsMessage).where(SmsMessage.idempotency_key == key))
