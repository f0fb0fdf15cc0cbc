"""Aliyun SMS (Dysms, API version 2017-05-25) through aliyun-python-sdk-core: a client that
delivers one message. The SDK signs the RPC request (HMAC-SHA1 over the canonicalised
parameters, keyed by the AccessKey secret); `CommonRequest` SendSms carries it. Our record of
every message (one row per idempotency key) is the outbox's, db/sms.py; the sandbox's Dysms is
simulators/dysms.py, which checks what Aliyun checks."""

from __future__ import annotations

import asyncio
import json

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from integrations.sms import SIGN_NAME, TEMPLATES, OutgoingSms, SmsRejected, SmsThrottled

__all__ = ["AliyunSms", "SmsRejected", "SmsThrottled"]

API_VERSION = "2017-05-25"
DEFAULT_ENDPOINT = "dysmsapi.aliyuncs.com"


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

    async def deliver(self, message: OutgoingSms, *, out_id: str) -> None:
        code, answer = await asyncio.to_thread(self._send_sync, message, out_id)
        if code == "OK":
            return
        if code in FINAL_CODES:
            raise SmsRejected(code, answer)
        raise SmsThrottled(code, answer)

    def _send_sync(self, message: OutgoingSms, out_id: str) -> tuple[str, str]:
        request = CommonRequest(domain=self._endpoint, version=API_VERSION, action_name="SendSms")
        request.set_method("POST")
        request.set_protocol_type(self._protocol)
        request.set_accept_format("json")
        request.add_query_param("PhoneNumbers", message.phone)
        request.add_query_param("SignName", self._sign_name)
        request.add_query_param("TemplateCode", TEMPLATES[message.template][0])
        request.add_query_param("TemplateParam", json.dumps(message.params, ensure_ascii=False))
        request.add_query_param("OutId", out_id)
        try:
            body = json.loads(self._client.do_action_with_exception(request))
        except ServerException as err:
            return err.get_error_code(), err.get_error_msg()
        except ClientException as err:  # network trouble: the outcome is unknown, retry
            return "SDK.ClientError", err.get_error_msg()
        return str(body.get("Code")), str(body.get("Message"))
