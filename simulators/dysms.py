"""Aliyun SMS (Dysms, API version 2017-05-25), simulated for dev and tests: it verifies the
RPC signature independently of the SDK (HMAC-SHA1 over the canonicalised parameters, keyed by
the AccessKey secret), the common parameters, the phone number, the sign name, the template
code and that TemplateParam carries exactly the template's variables, applies Aliyun's default
flow control for verification codes, and answers with Aliyun's response shapes and error
codes: SendSms a `BizId` (18 digits and `^0`), by which QuerySendDetails finds the message
with its carrier's receipt, `SendStatus` 1 waiting, 2 failed (`ErrCode` the carrier's code) or 3
delivered (`DELIVERED`): a text is delivered at once unless `Dysms.receipts` says otherwise for
its number. Every message it accepts is kept in its own database; `/_sandbox/messages` lists them.

`python -m simulators.dysms PORT ACCESS_KEY_ID SECRET [DB_FILE]` serves it (no file: in memory)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Float, Integer, MetaData, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from integrations.sms import SIGN_NAME, TEMPLATES, render, template_params
from simulators.store import Store, serve

API_VERSION = "2017-05-25"


class Base(DeclarativeBase):
    metadata = MetaData()


class Message(Base):
    __tablename__ = "message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    template: Mapped[str] = mapped_column(String(40))
    template_code: Mapped[str] = mapped_column(String(20))
    params: Mapped[str] = mapped_column(Text)  # TemplateParam, JSON
    text: Mapped[str] = mapped_column(Text)
    out_id: Mapped[str | None] = mapped_column(String(64))
    biz_id: Mapped[str] = mapped_column(String(40), index=True)  # SendSms' receipt, one a call
    at: Mapped[float] = mapped_column(Float)  # the simulator's clock, seconds


class Receipt(Base):
    """The carrier's receipt of a message not delivered at once (none: delivered, SendStatus 3);
    a table of its own, so a sandbox file of before opens as it was."""

    __tablename__ = "receipt"
    message_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    send_status: Mapped[int] = mapped_column(Integer)  # 1 waiting for the receipt, 2 failed
    err_code: Mapped[str] = mapped_column(String(40))


def percent_encode(value: str) -> str:
    """RFC 3986, as Aliyun's RPC signature wants it."""
    return quote(value, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def rpc_signature(method: str, params: dict[str, str], secret: str) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# Aliyun's default flow control for verification codes: a phone, 1 a minute, 5 an hour, 10 a day.
CODE_LIMITS = (
    (60, 1, "触发分钟级流控Permits:1"),
    (3600, 5, "触发小时级流控Permits:5"),
    (86400, 10, "触发天级流控Permits:10"),
)
PHONE = re.compile(r"^(\+?86)?1[3-9]\d{9}$")
COMMON = (
    "AccessKeyId",
    "Action",
    "Format",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
    "Signature",
)
BY_CODE = {code: name for name, (code, _) in TEMPLATES.items()}
ACTIONS = ("SendSms", "QuerySendDetails")
BEIJING = ZoneInfo("Asia/Shanghai")  # Aliyun's calendar: SendDate and the times it answers


def answer(code: str, message: str, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message, **extra}, status_code=status
    )


class Dysms:
    """The account's side: its keys and sign names, the nonces seen, and its message store."""

    def __init__(
        self, accounts: dict[str, str], store: Store, *, sign_names: set[str], clock: Callable[[], float]
    ) -> None:
        self.accounts = accounts
        self.store = store
        self.signs = sign_names
        self.clock = clock
        self.nonces: dict[str, float] = {}
        # the carrier's answer for a number: (SendStatus, ErrCode), 1 waiting or 2 failed; absent: delivered
        self.receipts: dict[str, tuple[int, str]] = {}

    def received(self, phone: str | None = None) -> list[dict[str, Any]]:
        """Every message accepted (to `phone`), oldest first."""
        query = select(Message).order_by(Message.id)
        if phone is not None:
            query = query.where(Message.phone == phone)
        with self.store.transaction() as session:
            return [
                {
                    "phone": m.phone,
                    "template": m.template,
                    "template_code": m.template_code,
                    "params": json.loads(m.params),
                    "text": m.text,
                    "out_id": m.out_id,
                    "biz_id": m.biz_id,
                    "at": m.at,
                }
                for m in session.scalars(query).all()
            ]

    def check_call(self, method: str, params: dict[str, str]) -> JSONResponse | None:
        """The RPC layer: common parameters, the AccessKey, the signature, the time, the nonce."""
        for name in COMMON:
            if not params.get(name):
                return answer(
                    f"MissingParameter.{name}" if name != "Signature" else "IncompleteSignature",
                    f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
                    400,
                )
        secret = self.accounts.get(params["AccessKeyId"])
        if secret is None:
            return answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return answer("InvalidSignatureMethod", "Specified signature method is not supported.", 400)
        given = params.pop("Signature")
        if not hmac.compare_digest(given, rpc_signature(method, params, secret)):
            return answer(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{string_to_sign(method, params)}",
                400,
            )
        try:
            sent_at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return answer("InvalidTimeStamp.Format", "Specified time stamp is not valid.", 400)
        if abs(self.clock() - sent_at.timestamp()) > 900:
            return answer("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)
        nonce = params["SignatureNonce"]
        if nonce in self.nonces:
            return answer("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
        self.nonces[nonce] = self.clock()
        if params["Action"] not in ACTIONS:
            return answer(
                "InvalidAction.NotFound", "Specified api is not found, please check your url and method.", 404
            )
        if params["Version"] != API_VERSION:
            return answer("InvalidVersion", "Specified parameter Version is not valid.", 400)
        return None

    def send_sms(self, params: dict[str, str]) -> JSONResponse:
        """SendSms: the numbers, the sign name, the template and its variables, flow control."""
        phones = params.get("PhoneNumbers", "")
        if not phones:
            return answer("MissingPhoneNumbers", "PhoneNumbers is mandatory for this action.", 400)
        if any(not PHONE.match(p) for p in phones.split(",")) or phones.count(",") >= 1000:
            return answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params.get("SignName") not in self.signs:
            return answer("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = BY_CODE.get(params.get("TemplateCode", ""))
        if template is None:
            return answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            values = None
        if not isinstance(values, dict) or any(not isinstance(v, str) for v in values.values()):
            return answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        wanted = template_params(template)
        if missing := wanted - set(values):
            return answer("isv.TEMPLATE_MISSING_PARAMETERS", f"模板缺少变量: {','.join(sorted(missing))}")
        if set(values) - wanted:
            return answer("isv.TEMPLATE_PARAMS_ILLEGAL", "模版变量里包含非法关键字")
        now = self.clock()
        biz_id = new_biz_id(now)
        with self.store.transaction() as session:
            if template == "verification_code":
                for phone in phones.split(","):
                    sent = session.scalars(
                        select(Message.at).where(
                            Message.phone == phone, Message.template == template, Message.at > now - 86400
                        )
                    ).all()
                    for window, permits, text in CODE_LIMITS:
                        if sum(1 for t in sent if now - t < window) >= permits:
                            return answer("isv.BUSINESS_LIMIT_CONTROL", text)
            for phone in phones.split(","):
                message = Message(
                    phone=phone,
                    template=template,
                    template_code=params["TemplateCode"],
                    params=json.dumps(values, ensure_ascii=False),
                    text=render(template, values),
                    out_id=params.get("OutId"),
                    biz_id=biz_id,
                    at=now,
                )
                session.add(message)
                if phone in self.receipts:
                    session.flush()
                    status, err_code = self.receipts[phone]
                    session.add(Receipt(message_id=message.id, send_status=status, err_code=err_code))
        return answer("OK", "OK", BizId=biz_id)

    def query_send_details(self, params: dict[str, str]) -> JSONResponse:
        """QuerySendDetails: one phone's messages of one day (Beijing), or the one `BizId` names,
        a page at a time, each with its receipt (SendStatus 3 DELIVERED, or as `receipts` made it)."""
        phone = params.get("PhoneNumber", "")
        if not PHONE.match(phone):
            return answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        try:
            day = datetime.strptime(params.get("SendDate", ""), "%Y%m%d").replace(tzinfo=BEIJING)
            size, page = int(params.get("PageSize", "")), int(params.get("CurrentPage", "1"))
        except ValueError:
            return answer("isv.INVALID_PARAMETERS", "参数异常")
        if not 1 <= size <= 50 or page < 1:
            return answer("isv.INVALID_PARAMETERS", "参数异常")
        if (datetime.fromtimestamp(self.clock(), BEIJING) - day).days > 30:
            return answer("isv.INVALID_PARAMETERS", "只支持查询最近30天的记录")
        start = day.timestamp()
        query = select(Message).where(Message.phone == phone, Message.at >= start, Message.at < start + 86400)
        if params.get("BizId"):
            query = query.where(Message.biz_id == params["BizId"])
        with self.store.transaction() as session:
            found = session.scalars(query.order_by(Message.id)).all()
            ids = [m.id for m in found]
            receipts = {r.message_id: r for r in session.scalars(select(Receipt).where(Receipt.message_id.in_(ids)))}
        details = [
            {
                "PhoneNum": m.phone,
                "SendStatus": receipts[m.id].send_status if m.id in receipts else 3,
                "ErrCode": receipts[m.id].err_code if m.id in receipts else "DELIVERED",
                "TemplateCode": m.template_code,
                "Content": m.text,
                "SendDate": beijing(m.at),
                "ReceiveDate": "" if m.id in receipts and receipts[m.id].send_status == 1 else beijing(m.at),
                "OutId": m.out_id or "",
            }
            for m in found[(page - 1) * size : page * size]
        ]
        return answer("OK", "OK", TotalCount=len(found), SmsSendDetailDTOs={"SmsSendDetailDTO": details})


def new_biz_id(now: float) -> str:
    """A receipt shaped as Aliyun's: 18 digits (its clock's milliseconds and a random part), '^0'."""
    return f"{int(now * 1000) % 10**6:06d}{secrets.randbelow(10**12):012d}^0"


def beijing(at: float) -> str:
    return datetime.fromtimestamp(at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def dysms_simulator_app(
    accounts: dict[str, str],
    *,
    store: Store | None = None,
    sign_names: set[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Dysms for `accounts` (AccessKey id -> secret); `store` None: a fresh one in memory.
    `app.state.dysms` is the `Dysms` behind it."""
    app = FastAPI(title="Dysms (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    dysms = Dysms(accounts, store or Store(Base.metadata), sign_names=sign_names or {SIGN_NAME}, clock=clock)
    app.state.dysms = dysms

    @app.api_route("/", methods=["GET", "POST"])
    async def rpc(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        refused = dysms.check_call(request.method, params)
        if refused is not None:
            return refused
        return dysms.send_sms(params) if params["Action"] == "SendSms" else dysms.query_send_details(params)

    @app.get("/_sandbox/messages")
    async def messages(phone: str | None = None) -> Any:
        return dysms.received(phone)

    return app


if __name__ == "__main__":  # python -m simulators.dysms PORT ACCESS_KEY_ID SECRET [DB_FILE]
    port, key_id, key_secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    serve(dysms_simulator_app({key_id: key_secret}, store=Store(Base.metadata, path)), port)
