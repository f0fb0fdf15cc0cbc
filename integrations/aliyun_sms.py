"""Aliyun SMS (Dysms, API version 2017-05-25) through aliyun-python-sdk-core, and a local
Dysms simulator that checks what Aliyun checks.

`AliyunSmsSender` keeps the outbox as our record of every message (one row per idempotency
key) and sends through the SDK's `CommonRequest` SendSms; the SDK signs the RPC request
(HMAC-SHA1 over the canonicalised parameters, keyed by the AccessKey secret).

`dysms_simulator_app` is the other side for dev and tests: it verifies that signature
independently of the SDK, the common parameters, the phone number, the sign name, the
template code and that TemplateParam carries exactly the template's variables, applies
Aliyun's default flow control for verification codes, and answers with Aliyun's response
shapes and error codes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SmsMessage
from db.pii import Pii, mask_phone
from integrations.sms import SIGN_NAME, TEMPLATES, OutgoingSms, SendResult, render, template_params

API_VERSION = "2017-05-25"
DEFAULT_ENDPOINT = "dysmsapi.aliyuncs.com"


class SmsRejected(Exception):
    """Aliyun refused the message for good (illegal number, bad template): do not retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SmsThrottled(Exception):
    """Flow control or a passing fault: try again later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


FINAL_CODES = {"InvalidAccessKeySecret", "isv.MOBILE_NUMBER_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL",
               "isv.TEMPLATE_MISSING_PARAMETERS", "isv.TEMPLATE_PARAMS_ILLEGAL", "isv.INVALID_PARAMETERS",
               "isv.BLACK_KEY_CONTROL_LIMIT", "isv.PARAM_LENGTH_LIMIT", "isv.AMOUNT_NOT_ENOUGH",
               "SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound", "isv.ACCOUNT_NOT_EXISTS"}


class AliyunSmsSender:
    def __init__(self, factory: async_sessionmaker[AsyncSession], pii: Pii, *, access_key_id: str,
                 access_key_secret: str, endpoint: str = DEFAULT_ENDPOINT, protocol: str = "https",
                 sign_name: str = SIGN_NAME, region: str = "cn-hangzhou", timeout_seconds: int = 10) -> None:
        self._factory = factory
        self._pii = pii
        self._client = AcsClient(access_key_id, access_key_secret, region, timeout=timeout_seconds,
                                 connect_timeout=timeout_seconds, max_retry_time=0, auto_retry=False)
        self._endpoint = endpoint
        self._protocol = protocol
        self._sign_name = sign_name

    async def send(self, message: OutgoingSms) -> SendResult:
        if template_params(message.template) != set(message.params):
            raise ValueError(f"template {message.template} takes {sorted(template_params(message.template))}")
        row_id, status = await self._outbox_row(message)
        if status == "sent":
            return SendResult(message_id=row_id, duplicate=True)
        if status == "failed":
            raise SmsRejected("already_rejected", "Aliyun refused this message before")
        code, answer = await asyncio.to_thread(self._send_sync, message, row_id)
        async with self._factory() as session, session.begin():
            row = await session.get(SmsMessage, row_id)
            assert row is not None
            if code == "OK":
                row.status = "sent"
                row.params = {**row.params}
            elif code in FINAL_CODES:
                row.status = "failed"
        if code == "OK":
            return SendResult(message_id=row_id, duplicate=False)
        if code in FINAL_CODES:
            raise SmsRejected(code, answer)
        raise SmsThrottled(code, answer)

    async def _outbox_row(self, message: OutgoingSms) -> tuple[int, str]:
        """Our record first, keyed: a retry finds it and never sends a delivered message again."""
        async with self._factory() as session, session.begin():
            row = await session.scalar(select(SmsMessage).where(
                SmsMessage.idempotency_key == message.idempotency_key))
            if row is None:
                row = SmsMessage(idempotency_key=message.idempotency_key,
                                 phone_hash=self._pii.lookup("phone", message.phone),
                                 phone_masked=mask_phone(message.phone), template=message.template,
                                 params=message.params, text=render(message.template, message.params),
                                 patient_id=message.patient_id, visit_id=message.visit_id, status="sending",
                                 created_at=message.at or datetime.now(timezone.utc))
                session.add(row)
                await session.flush()
            return row.id, row.status

    def _send_sync(self, message: OutgoingSms, row_id: int) -> tuple[str, str]:
        request = CommonRequest(domain=self._endpoint, version=API_VERSION, action_name="SendSms")
        request.set_method("POST")
        request.set_protocol_type(self._protocol)
        request.set_accept_format("json")
        request.add_query_param("PhoneNumbers", message.phone)
        request.add_query_param("SignName", self._sign_name)
        request.add_query_param("TemplateCode", TEMPLATES[message.template][0])
        request.add_query_param("TemplateParam", json.dumps(message.params, ensure_ascii=False))
        request.add_query_param("OutId", str(row_id))
        try:
            body = json.loads(self._client.do_action_with_exception(request))
        except ServerException as err:
            return err.get_error_code(), err.get_error_msg()
        except ClientException as err:  # network trouble: the outcome is unknown, retry
            return "SDK.ClientError", err.get_error_msg()
        return str(body.get("Code")), str(body.get("Message"))


# --- the other side ------------------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986, as Aliyun's RPC signature wants it."""
    return quote(value, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def rpc_signature(method: str, params: dict[str, str], secret: str) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class DysmsState:
    received: list[dict[str, Any]] = field(default_factory=list)
    nonces: dict[str, float] = field(default_factory=dict)
    sends: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))


# Aliyun's default flow control for verification codes: a phone, 1 a minute, 5 an hour, 10 a day.
CODE_LIMITS = ((60, 1, "触发分钟级流控Permits:1"), (3600, 5, "触发小时级流控Permits:5"),
               (86400, 10, "触发天级流控Permits:10"))
PHONE = re.compile(r"^(\+?86)?1[3-9]\d{9}$")
COMMON = ("AccessKeyId", "Action", "Format", "SignatureMethod", "SignatureNonce", "SignatureVersion",
          "Timestamp", "Version", "Signature")


def dysms_simulator_app(accounts: dict[str, str], *, sign_names: set[str] | None = None,
                        clock: Any = time.time) -> FastAPI:
    app = FastAPI(title="Dysms (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    state = DysmsState()
    app.state.dysms = state
    signs = sign_names or {SIGN_NAME}
    by_code = {code: name for name, (code, _) in TEMPLATES.items()}

    def answer(code: str, message: str, status: int = 200, **extra: Any) -> JSONResponse:
        return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message, **extra},
                            status_code=status)

    @app.api_route("/", methods=["GET", "POST"])
    async def rpc(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        for name in COMMON:
            if not params.get(name):
                return answer(f"MissingParameter.{name}" if name != "Signature" else "IncompleteSignature",
                              f"The input parameter \"{name}\" that is mandatory for processing this request "
                              "is not supplied.", 400)
        secret = accounts.get(params["AccessKeyId"])
        if secret is None:
            return answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return answer("InvalidSignatureMethod", "Specified signature method is not supported.", 400)
        given = params.pop("Signature")
        if not hmac.compare_digest(given, rpc_signature(request.method, params, secret)):
            return answer("SignatureDoesNotMatch", "Specified signature is not matched with our calculation. "
                          f"server string to sign is:{string_to_sign(request.method, params)}", 400)
        try:
            sent_at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return answer("InvalidTimeStamp.Format", "Specified time stamp is not valid.", 400)
        if abs(clock() - sent_at.timestamp()) > 900:
            return answer("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)
        nonce = params["SignatureNonce"]
        if nonce in state.nonces:
            return answer("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
        state.nonces[nonce] = clock()
        if params["Action"] != "SendSms":
            return answer("InvalidAction.NotFound", "Specified api is not found, please check your url and method.",
                          404)
        if params["Version"] != API_VERSION:
            return answer("InvalidVersion", "Specified parameter Version is not valid.", 400)

        phones = params.get("PhoneNumbers", "")
        if not phones:
            return answer("MissingPhoneNumbers", "PhoneNumbers is mandatory for this action.", 400)
        if any(not PHONE.match(p) for p in phones.split(",")) or phones.count(",") >= 1000:
            return answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params.get("SignName") not in signs:
            return answer("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = by_code.get(params.get("TemplateCode", ""))
        if template is None:
            return answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if not isinstance(values, dict) or any(not isinstance(v, str) for v in values.values()):
            return answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        wanted = template_params(template)
        if missing := wanted - set(values):
            return answer("isv.TEMPLATE_MISSING_PARAMETERS", f"模板缺少变量: {','.join(sorted(missing))}")
        if set(values) - wanted:
            return answer("isv.TEMPLATE_PARAMS_ILLEGAL", "模版变量里包含非法关键字")
        now = clock()
        if template == "verification_code":
            for phone in phones.split(","):
                history = state.sends[phone]
                while history and now - history[0] > 86400:
                    history.popleft()
                for window, permits, text in CODE_LIMITS:
                    if sum(1 for t in history if now - t < window) >= permits:
                        return answer("isv.BUSINESS_LIMIT_CONTROL", text)
        for phone in phones.split(","):
            if template == "verification_code":
                state.sends[phone].append(now)
            state.received.append({"phone": phone, "template": template, "template_code": params["TemplateCode"],
                                   "params": values, "text": render(template, values),
                                   "out_id": params.get("OutId"), "at": now})
        return answer("OK", "OK", BizId=f"{secrets.randbelow(10**15):015d}^0")

    return app


if __name__ == "__main__":  # python -m integrations.aliyun_sms PORT ACCESS_KEY_ID SECRET
    import sys

    import uvicorn

    port, key_id, key_secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(dysms_simulator_app({key_id: key_secret}), host="127.0.0.1", port=port, log_level="warning")
