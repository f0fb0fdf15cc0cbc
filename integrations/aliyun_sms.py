"""Aliyun SMS (Dysms, API version 2017-05-25) through aliyun-python-sdk-core: a client that
delivers one message. The SDK signs the RPC request (HMAC-SHA1 over the canonicalised
parameters, keyed by the AccessKey secret); `CommonRequest` SendSms carries it. Our record of
every message (one row per idempotency key) is the outbox's, db/sms.py; the sandbox's Dysms is
simulators/dysms.py, which checks what Aliyun checks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from integrations.sms import SIGN_NAME, TEMPLATES, Delivered, OutgoingSms, SmsRejected, SmsThrottled

__all__ = ["AliyunSms", "SmsRejected", "SmsThrottled"]

API_VERSION = "2017-05-25"
DEFAULT_ENDPOINT = "dysmsapi.aliyuncs.com"
BEIJING = ZoneInfo("Asia/Shanghai")  # QuerySendDetails' SendDate and the times it answers
FAILED = 2  # QuerySendDetails' SendStatus: 1 waiting for the carrier's receipt, 2 failed, 3 delivered


FINAL_CODES = {
    "InvalidAccessKeySecret",
    "isv.MOBILE_NUMBER_ILLEGAL",
    "isv.SMS_TEMPLATE_ILLEGAL",
    "isv.SMS_SIGNATURE_ILLEGAL",
    "isv.TEMPLATE_MISSING_PARAMETERS",
    "isv.TEMPLATE_PARAMS_ILLEGAL",
    "isv.INVALID_PARAMETERS",
    "isv.BLACK_KEY_CONTROL_LIMIT",
    "isv.PARAM_LENGTH_LIMIT",
    "isv.AMOUNT_NOT_ENOUGH",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId.NotFound",
    "isv.ACCOUNT_NOT_EXISTS",
}


class AliyunSms:
    """Delivers one message through Dysms; `deliver` raises SmsRejected for Aliyun's final
    refusals and SmsThrottled for flow control, passing faults and an unknown outcome."""

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        endpoint: str = DEFAULT_ENDPOINT,
        protocol: str = "https",
        sign_name: str = SIGN_NAME,
        region: str = "cn-hangzhou",
        timeout_seconds: int = 10,
    ) -> None:
        self._client = AcsClient(
            access_key_id,
            access_key_secret,
            region,
            timeout=timeout_seconds,
            connect_timeout=timeout_seconds,
            max_retry_time=0,
            auto_retry=False,
        )
        self._endpoint = endpoint
        self._protocol = protocol
        self._sign_name = sign_name

    async def deliver(self, message: OutgoingSms, *, out_id: str) -> Delivered:
        """SendSms; its `BizId` is Aliyun's id of the message (QuerySendDetails finds it by it)."""
        body = await asyncio.to_thread(self._call, "SendSms", self._send_params(message, out_id))
        code = str(body.get("Code"))
        if code == "OK":
            return Delivered(provider_message_id=body.get("BizId") or None, accepted_at=datetime.now(UTC))
        if code in FINAL_CODES:
            raise SmsRejected(code, str(body.get("Message")))
        raise SmsThrottled(code, str(body.get("Message")))

    async def find(self, message: OutgoingSms, *, out_id: str, days: list[date]) -> Delivered | None:
        """QuerySendDetails for the phone on each of `days`: the message sent with our `OutId`,
        delivered (SendStatus 3) or waiting for the carrier's receipt (1). One the carrier failed
        (2) was not sent: SmsRejected with its ErrCode (the outbox marks the row `failed`)."""
        failed = None
        for day in days:
            for detail in await self.details(message.phone, day):
                if detail.get("OutId") != out_id:
                    continue
                if int(detail.get("SendStatus") or 0) == FAILED:
                    failed = failed or str(detail.get("ErrCode") or "unknown")
                    continue
                sent = datetime.strptime(str(detail["SendDate"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
                return Delivered(provider_message_id=None, accepted_at=sent.astimezone(UTC))
        if failed is not None:
            raise SmsRejected(failed, "the carrier could not deliver the message (QuerySendDetails SendStatus 2)")
        return None

    async def details(self, phone: str, day: date, *, biz_id: str | None = None) -> list[dict[str, Any]]:
        """QuerySendDetails: what Aliyun sent to `phone` on `day` (its calendar, Beijing), or the
        message `biz_id`; raises SmsThrottled when it cannot answer."""
        params = {"PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"), "PageSize": "50", "CurrentPage": "1"}
        if biz_id:
            params["BizId"] = biz_id
        body = await asyncio.to_thread(self._call, "QuerySendDetails", params)
        if body.get("Code") != "OK":
            raise SmsThrottled(str(body.get("Code")), str(body.get("Message")))
        return list((body.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or [])

    def _send_params(self, message: OutgoingSms, out_id: str) -> dict[str, str]:
        return {
            "PhoneNumbers": message.phone,
            "SignName": self._sign_name,
            "TemplateCode": TEMPLATES[message.template][0],
            "TemplateParam": json.dumps(message.params, ensure_ascii=False),
            "OutId": out_id,
        }

    def _call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        request = CommonRequest(domain=self._endpoint, version=API_VERSION, action_name=action)
        request.set_method("POST")
        request.set_protocol_type(self._protocol)
        request.set_accept_format("json")
        for name, value in params.items():
            request.add_query_param(name, value)
        try:
            return dict(json.loads(self._client.do_action_with_exception(request)))
        except ServerException as err:
            return {"Code": err.get_error_code(), "Message": err.get_error_msg()}
        except ClientException as err:  # network trouble: the outcome is unknown, retry
            return {"Code": "SDK.ClientError", "Message": err.get_error_msg()}
