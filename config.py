"""One Settings object, read from YHF_* environment variables (or a .env file)."""

from __future__ import annotations

import re
from datetime import time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.policy import PaymentPolicy, QuietHours

ROOT = Path(__file__).resolve().parent
DEV_SECRETS = {"dev-his-key", "dev-ops-key", "dev-data-key-change-me", "dev-bureau-secret", "dev-credit-secret"}

_ISO_DURATION = re.compile(
    r"^P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: object) -> timedelta:
    """ISO 8601 duration (days, hours, minutes, seconds), e.g. P7D, PT2S, P1DT12H."""
    if isinstance(value, timedelta):
        return value
    text = str(value).strip().upper()
    match = _ISO_DURATION.match(text)
    if not match or text in {"P", "PT"} or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {value!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    duration = timedelta(**parts)
    if duration <= timedelta(0):
        raise ValueError(f"duration must be positive: {value!r}")
    return duration


def parse_quiet_hours(value: object) -> QuietHours | None:
    """`21:00-08:00` -> QuietHours; empty -> None (no quiet hours)."""
    if value is None or isinstance(value, QuietHours):
        return value
    text = str(value).strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text)
    if not match:
        raise ValueError(f"quiet hours must look like 21:00-08:00, got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60):
        raise ValueError(f"quiet hours out of range: {value!r}")
    return QuietHours.of(time(h1, m1), time(h2, m2))


def parse_arrears_after(value: object) -> str | timedelta:
    if isinstance(value, timedelta):
        return value
    text = str(value).strip()
    if text == "end_of_day":
        return text
    return parse_duration(text)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YHF_", env_file=".env", extra="ignore")

    sandbox: bool = False
    database_url: str = f"sqlite+aiosqlite:///{ROOT / '.data' / 'yihoufu.db'}"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "yihoufu-visits"

    his_api_key: str = ""
    ops_api_key: str = ""
    # Key for hashing and encrypting personal data at rest (HMAC + Fernet derivation).
    data_key: str = ""

    timezone: str = "Asia/Shanghai"
    arrears_after: Annotated[str | timedelta, BeforeValidator(parse_arrears_after)] = "end_of_day"
    default_after: Duration = timedelta(days=7)
    dunning_every: Duration = timedelta(days=1)
    pre_default_notice: Duration = timedelta(days=1)
    # a settled visit accepts cancellations (退费) this long, refunding what they free
    refund_window: Duration = timedelta(days=7)
    sms_quiet_hours: Annotated[QuietHours | None, BeforeValidator(parse_quiet_hours)] = Field(
        default_factory=lambda: QuietHours.of(time(21, 0), time(8, 0))
    )

    bank_score_threshold: int = 110
    sesame_score_threshold: int = 700
    agreement_version: str = "2026-01"
    hospital_name: str = "医后付示范医院"  # the issuer on electronic receipts

    # The government-side gateways. Unset in the sandbox: their simulators run in-process.
    insurance_bureau_url: str = ""
    insurance_bureau_app_id: str = "yhf-hospital"
    insurance_bureau_secret: str = ""
    credit_platform_url: str = ""
    credit_platform_app_id: str = "yhf-hospital"
    credit_platform_secret: str = ""

    # SMS: `outbox` records messages for the sandbox; `aliyun` sends them through Dysms.
    sms_backend: Literal["outbox", "aliyun"] = "outbox"
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    aliyun_sms_endpoint: str = "dysmsapi.aliyuncs.com"
    aliyun_sms_protocol: Literal["https", "http"] = "https"
    aliyun_sms_sign_name: str = "医后付"

    # WeChat Pay API v3 (the channel is offered when the merchant id is set)
    wechat_mchid: str = ""
    wechat_appid: str = ""
    wechat_merchant_serial: str = ""
    wechat_merchant_key_path: str = ""
    wechat_apiv3_key: str = ""
    wechat_platform_public_key_path: str = ""
    wechat_platform_public_key_id: str = ""
    wechat_gateway: str = "https://api.mch.weixin.qq.com"
    # Alipay (the channel is offered when the app id is set)
    alipay_app_id: str = ""
    alipay_seller_id: str = ""
    alipay_app_private_key_path: str = ""
    alipay_public_key_path: str = ""
    alipay_gateway: str = "https://openapi.alipay.com/gateway.do"
    # reconciliation: every so often, ask the channels about payments pending longer than this
    reconcile_every: Duration = timedelta(minutes=5)
    reconcile_after: Duration = timedelta(minutes=2)
    # a channel order still unpaid this long is closed there and the payment marked failed
    order_expires_after: Duration = timedelta(hours=2)
    # 医保脱卡支付: the self-pay part must land this long after the insurance part settled, or 冲正
    insurance_self_pay_timeout: Duration = timedelta(minutes=15)
    # each day at this local time (cron), yesterday's channel statements are matched to the ledger
    statement_cron: str = "0 10 * * *"
    # where the payment channels reach this API (their notify URLs)
    public_base_url: str = "http://127.0.0.1:8000"

    sms_code_ttl: Duration = timedelta(minutes=5)
    sms_code_max_attempts: int = 5
    sms_code_min_interval: Duration = timedelta(minutes=1)
    sms_codes_per_hour: int = 5
    sms_codes_per_day: int = 10
    sms_codes_per_ip_hour: int = 30
    patient_token_ttl: Duration = timedelta(hours=12)
    sandbox_channel_secret: str = "dev-sandbox-channel-secret"

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        if self.sms_backend == "aliyun" and not (self.aliyun_access_key_id and self.aliyun_access_key_secret):
            raise ValueError("YHF_SMS_BACKEND=aliyun needs YHF_ALIYUN_ACCESS_KEY_ID and YHF_ALIYUN_ACCESS_KEY_SECRET")
        if self.sandbox:
            self.his_api_key = self.his_api_key or "dev-his-key"
            self.ops_api_key = self.ops_api_key or "dev-ops-key"
            self.data_key = self.data_key or "dev-data-key-change-me"
            self.insurance_bureau_secret = self.insurance_bureau_secret or "dev-bureau-secret"
            self.credit_platform_secret = self.credit_platform_secret or "dev-credit-secret"
            return self
        for name in ("his_api_key", "ops_api_key", "data_key", "insurance_bureau_url", "insurance_bureau_secret",
                     "credit_platform_url", "credit_platform_secret"):
            value = getattr(self, name)
            if not value or value in DEV_SECRETS:
                raise ValueError(f"YHF_{name.upper()} must be set to a real secret outside the sandbox")
        return self

    def payment_policy(self) -> PaymentPolicy:
        return PaymentPolicy(
            timezone=self.timezone,
            arrears_after_seconds=None
            if self.arrears_after == "end_of_day"
            else self.arrears_after.total_seconds(),
            default_after_seconds=self.default_after.total_seconds(),
            dunning_every_seconds=self.dunning_every.total_seconds(),
            notice_before_seconds=self.pre_default_notice.total_seconds(),
            refund_window_seconds=self.refund_window.total_seconds(),
            quiet_hours=self.sms_quiet_hours,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()


def wechat_config(settings: Settings):  # type: ignore[no-untyped-def]
    """The WeChat Pay merchant configuration, or None when the channel is not set up."""
    if not settings.wechat_mchid:
        return None
    from integrations.payments.wechat import WeChatConfig

    return WeChatConfig(
        mchid=settings.wechat_mchid, appid=settings.wechat_appid,
        merchant_private_key=Path(settings.wechat_merchant_key_path).read_text(),
        merchant_serial=settings.wechat_merchant_serial, apiv3_key=settings.wechat_apiv3_key,
        platform_public_key=Path(settings.wechat_platform_public_key_path).read_text(),
        platform_public_key_id=settings.wechat_platform_public_key_id,
        notify_url=f"{settings.public_base_url.rstrip('/')}/v1/payments/notify/wechat",
        gateway=settings.wechat_gateway)


def alipay_config(settings: Settings):  # type: ignore[no-untyped-def]
    """The Alipay app configuration, or None when the channel is not set up."""
    if not settings.alipay_app_id:
        return None
    from integrations.payments.alipay import AlipayConfig

    return AlipayConfig(
        app_id=settings.alipay_app_id, seller_id=settings.alipay_seller_id,
        app_private_key=Path(settings.alipay_app_private_key_path).read_text(),
        alipay_public_key=Path(settings.alipay_public_key_path).read_text(),
        notify_url=f"{settings.public_base_url.rstrip('/')}/v1/payments/notify/alipay",
        gateway=settings.alipay_gateway)
