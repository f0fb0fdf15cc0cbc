"""SMS: the message templates (as registered with Aliyun, zh-CN), the message, and the two
sides of sending one.

`SmsSender` is what the API and the activities call: it takes an idempotency key and sends a
key once (db/sms.py keeps that record, the outbox). `SmsDelivery` is a gateway's client that
hands one message over (integrations/aliyun_sms.py); without one, the outbox row is the
delivery (the sandbox: `GET /v1/sandbox/sms` reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from string import Template
from typing import Protocol

SIGN_NAME = "医后付"

# template name -> (Aliyun template code, text with ${params})
TEMPLATES: dict[str, tuple[str, str]] = {
    "verification_code": ("SMS_480100001", "您的验证码为${code}，5分钟内有效，请勿泄露给他人。"),
    "bill_ready": ("SMS_480100002", "您本次就诊费用${amount}元已记账，请在${deadline}前通过医后付完成支付。"),
    "arrears": (
        "SMS_480100003",
        "您的就诊费用${amount}元未在就诊当日支付，已转为欠费。请在${deadline}前支付，逾期将锁定医保卡并上报征信平台。",
    ),
    "dunning": (
        "SMS_480100004",
        "提醒：您尚有就诊欠费${amount}元未支付，请在${deadline}前支付，逾期将锁定医保卡并上报征信平台。",
    ),
    "pre_default": (
        "SMS_480100008",
        "您的就诊欠费${amount}元将于${deadline}逾期。逾期未付将锁定医保卡并上报征信平台，请尽快支付。",
    ),
    "card_locked": (
        "SMS_480100005",
        "您的就诊欠费${amount}元已逾期，医保卡已锁定，欠费已上报征信平台。支付后自动解锁并更正。",
    ),
    # a reminder after the deadline: what has happened and how to undo it, no date already past
    "dunning_defaulted": (
        "SMS_480100011",
        "提醒：您尚有就诊欠费${amount}元未支付，医保卡已锁定、欠费已上报征信平台。通过医后付支付后，医保卡自动解锁，征信记录自动更正。",
    ),
    "payment_received": ("SMS_480100006", "已收到您的付款，本次就诊费用${amount}元已结清。"),
    "payment_received_unlocked": (
        "SMS_480100007",
        "已收到您的付款，就诊费用${amount}元已结清，医保卡已解锁，征信记录已更正。",
    ),
    "refund_sent": ("SMS_480100009", "您的退费${amount}元已按原支付方式退回，请注意查收。"),
    "refund_at_window": ("SMS_480100010", "您有退费${amount}元，请携带就诊卡到医院收费窗口办理。"),
    # a dispute's outcome (申诉结果)
    "dispute_upheld": (
        "SMS_480100012",
        "您的就诊费用申诉已审核通过，已减免${amount}元，医保卡锁定与征信上报（如有）已撤销并更正。",
    ),
    "dispute_rejected": (
        "SMS_480100013",
        "您的就诊费用申诉经审核未予支持，尚欠${amount}元，请在${deadline}前通过医后付支付，逾期将锁定医保卡并上报征信平台。",
    ),
    # rejected after the default: no deadline is left to name (the card stays locked until paid)
    "dispute_rejected_defaulted": (
        "SMS_480100014",
        "您的就诊费用申诉经审核未予支持，尚欠${amount}元，医保卡锁定与征信上报将保持至欠费付清；通过医后付支付后自动解锁并更正。",
    ),
}


def render(template: str, params: dict[str, str]) -> str:
    _, text = TEMPLATES[template]
    return f"【{SIGN_NAME}】" + Template(text).substitute(params)


class SmsRejected(Exception):
    """The gateway refused the message for good (illegal number, bad template): do not retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SmsThrottled(Exception):
    """Flow control or a passing fault: try again later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def template_params(template: str) -> set[str]:
    _, text = TEMPLATES[template]
    return {
        m.group("named") or m.group("braced")
        for m in Template.pattern.finditer(text)
        if m.group("named") or m.group("braced")
    }


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
    message_id: int  # our outbox row's
    duplicate: bool
    provider_message_id: str | None = None  # the gateway's (Aliyun's BizId); None: no gateway


@dataclass(frozen=True, kw_only=True)
class Delivered:
    """A gateway's receipt: its id for the message (Aliyun's BizId) and when it accepted it."""

    provider_message_id: str | None
    accepted_at: datetime


class SmsSender(Protocol):
    async def send(self, message: OutgoingSms) -> SendResult: ...


class SmsDelivery(Protocol):
    async def deliver(self, message: OutgoingSms, *, out_id: str) -> Delivered:
        """Hand one message to the gateway; raises SmsRejected (final) or SmsThrottled (retry)."""
        ...

    async def find(self, message: OutgoingSms, *, out_id: str, days: list[date]) -> Delivered | None:
        """The gateway's record of a message handed over before under `out_id` (sent on one of
        `days`, the gateway's calendar), or None: a retry whose first try's outcome is unknown
        asks before it texts the patient again."""
        ...


def check_params(message: OutgoingSms) -> None:
    """A message must fill exactly its template's variables (a programming error otherwise)."""
    wanted = template_params(message.template)
    if wanted != set(message.params):
        raise ValueError(f"template {message.template} takes {sorted(wanted)}")
