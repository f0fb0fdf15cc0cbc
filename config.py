"""One Settings object, read from YHF_* environment variables (or a .env file)."""

from __future__ import annotations

import base64
import binascii
import os
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
# the sandbox's SM2 private key for the insurance bureau (NHSA) gateway: public, so refused outside it
DEV_BUREAU_SM2_KEY = "7e02462a94ecdd767bc1da22fa8d86bded2a432b552b52ec4002ce34575fe424"
# the sandbox's platform key pair (医保移动支付's notifications): the simulated bureau signs with the
# private half, the sandbox verifies with the public half (YHF_INSURANCE_BUREAU_PUBLIC_KEY's default)
DEV_BUREAU_PLATFORM_KEY = "7ff0260f37d8ec20f44b97f63219882fe90c00267ab8d0e73b62d799d7926ae1"
DEV_BUREAU_PLATFORM_PUBLIC_KEY = (
    "38b8e85f9a2170d7e33df019524668bc9f922992e183571185976a057faf9720"
    "dd49a993aa1fcb12ad6ca6b883221b0bd20db70f425a8c7fbd72f12447a25f46"
)
DEV_BUREAU_PAAS_TOKEN = "dev-paas-token-9874cd8d110c53c4"  # the sandbox's gateway paasToken (x-tif-signature)
DEV_FIXMEDINS_CODE = "H00000000001"  # the sandbox's 定点医药机构编号 at the simulated bureau
DEV_SECRETS |= {"dev-ebill-key"}
DEV_EBILL_AGENCY_CODE = "DEV-AGENCY-0001"  # the sandbox's agency code at the simulated e-bill platform
DEV_CREDITOR_CODE = "DEV-CREDITOR-0001"  # the sandbox's creditor code at the simulated credit platform
# the payload codec's key that `make dev` sets (devstack.py): public, so refused outside the sandbox
DEV_PAYLOAD_KEY = "dev:eWlob3VmdSBkZXYgcGF5bG9hZCBrZXk6IHB1YmxpYyE="

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


def parse_payload_keys(value: str) -> list[tuple[str, bytes]]:
    """YHF_PAYLOAD_KEY, `id:base64key[,id:base64key...]` -> [(id, 32-byte AES-256 key)]: the
    first encrypts, every one decrypts (rotation: put the new key first, keep the old ones while
    histories written under them are kept). Errors never quote a key."""
    keys: list[tuple[str, bytes]] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        kid, sep, encoded = entry.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", kid):
            raise ValueError("YHF_PAYLOAD_KEY: each key is `id:base64key`, the id of letters, digits, . _ -")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ValueError(f"YHF_PAYLOAD_KEY: key {kid!r} is not base64") from None
        if len(key) != 32:
            raise ValueError(f"YHF_PAYLOAD_KEY: key {kid!r} must be 32 bytes (AES-256), not {len(key)}")
        if kid in dict(keys):
            raise ValueError(f"YHF_PAYLOAD_KEY: key id {kid!r} is given twice")
        keys.append((kid, key))
    return keys


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YHF_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    sandbox: bool = False
    database_url: str = f"sqlite+aiosqlite:///{ROOT / '.data' / 'yihoufu.db'}"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # a cluster that needs more than a plain connection (none set: the embedded dev server): mTLS
    # with a client certificate and key (PEM files, set together) and the CA of the server's
    # certificate (unset: the system's roots), or Temporal Cloud's API key (TLS on); the server
    # name, when the certificate does not carry the address's host (integrations/temporal.py)
    temporal_tls_cert: str = ""
    temporal_tls_key: str = ""
    temporal_tls_ca: str = ""
    temporal_tls_server_name: str = ""
    temporal_api_key: str = ""
    # the payload codec's keys (parse_payload_keys); unset: payloads go to Temporal plain (the
    # sandbox only). The Temporal UI's origins (comma-separated) may call /v1/ops/codec
    payload_key: str = ""
    ui_origin: str = ""
    # Temporal UI signed in through OIDC passes its user's access token to the codec endpoint
    # (TEMPORAL_CODEC_PASS_ACCESS_TOKEN): accepted when signed by a key of this JWKS, with this
    # issuer and audience (unset: only the ops key opens the codec outside the sandbox)
    ui_oidc_jwks_url: str = ""
    ui_oidc_issuer: str = ""
    ui_oidc_audience: str = ""
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
    # no reminders this long after the deadline; the debt stays in the books and receivables
    dunning_stop_after: Duration = timedelta(days=90)
    # a visit the HIS never discharges is discharged this long after registration
    auto_discharge_after: Duration = timedelta(hours=24)
    sms_quiet_hours: Annotated[QuietHours | None, BeforeValidator(parse_quiet_hours)] = Field(
        default_factory=lambda: QuietHours.of(time(21, 0), time(8, 0))
    )

    bank_score_threshold: int = 110
    sesame_score_threshold: int = 700
    agreement_version: str = "2026-01"
    hospital_name: str = "医后付示范医院"  # the issuer on electronic receipts

    # The government-side gateways. In the sandbox devstack points the URLs at its simulators
    # (simulators/bureau.py, credit.py); a gateway with no URL stops the API and the worker at start.
    # The bureau speaks NHSA (国家医保信息平台, integrations/insurance_bureau.py): the app id is
    # the gateway's x-tif-paasid, the secret this hospital's SM2 private key (64 hex; the bureau
    # holds its public half), then the hospital's 定点医药机构编号 (12 characters) and name, and
    # the 医保区划 (admvs). The sandbox fills in dev values, refused elsewhere.
    insurance_bureau_url: str = ""
    insurance_bureau_app_id: str = "yhf-hospital"
    insurance_bureau_secret: str = ""
    # the platform's SM2 public key (128 hex, x||y): verifies its 医保移动支付 notifications; the
    # sandbox's is DEV_BUREAU_PLATFORM_PUBLIC_KEY (refused elsewhere; unset: no notification verifies)
    insurance_bureau_public_key: str = ""
    # the gateway's paasToken, issued with the paasid: keys x-tif-signature (SHA-256); the sandbox's is
    # DEV_BUREAU_PAAS_TOKEN (refused elsewhere)
    insurance_bureau_paas_token: str = ""
    insurance_fixmedins_code: str = ""
    insurance_fixmedins_name: str = ""
    insurance_admvs: str = ""
    credit_platform_url: str = ""
    credit_platform_app_id: str = "yhf-hospital"
    credit_platform_secret: str = ""
    # the creditor a credit report names: this hospital's code at the platform, and its name. The
    # sandbox fills in DEV_CREDITOR_CODE (refused elsewhere); unset outside it, the worker refuses to start
    credit_creditor_code: str = ""
    credit_creditor_name: str = ""
    # a negative record is deleted at the platform this many days after its debt ended (5 years)
    credit_retention_days: int = Field(default=1826, ge=1)
    # how often the credit upkeep runs: objections answered, expired records deleted
    credit_upkeep_every: Duration = timedelta(hours=1)
    # the provincial fiscal e-bill platform (财政电子票据, integrations/ebill.py): its URL, this
    # hospital's appid and key there, the region (区划) and agency (单位) codes it registered the
    # hospital under and the billing point (开票点). No URL: no e-bills (our own receipt only).
    # The sandbox fills in the key and agency code (refused elsewhere); devstack starts
    # simulators/ebill.py and points the URL at it.
    ebill_url: str = ""
    ebill_app_id: str = "yhf-hospital"
    ebill_app_key: str = ""
    ebill_region_code: str = "440300"
    ebill_agency_code: str = ""
    ebill_place_code: str = "001"

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
    # a window payment answers once its visits recorded `settled` (their sanctions undone), or
    # after this long: read-your-writes, bounded (a visit whose workflow is away is not waited for)
    payment_settled_wait: Duration = timedelta(seconds=5)
    # a stopping worker lets the activities in hand finish this long before it cancels them
    # (one cancelled in the middle of a transaction would hold SQLite's write lock until collected)
    worker_shutdown_grace: Duration = timedelta(seconds=10)
    # activities one worker runs at once (None: the SDK's default, 100)
    worker_max_concurrent_activities: int | None = Field(default=None, ge=1)
    # workflows one worker keeps in memory between their tasks (the SDK's sticky cache): bounds its
    # memory whatever the number of open visits; a visit evicted is replayed from its history
    worker_max_cached_workflows: int = Field(default=1000, ge=0)
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

    # the API's edges
    max_body_bytes: int = 1_048_576  # a larger request body is refused (413 body_too_large) unread
    docs_enabled: bool | None = None  # /docs and /openapi.json; unset: on in the sandbox only
    metrics_token: str = ""  # a scrape token for /metrics (the ops key opens it too); unset in the sandbox: open
    trust_forwarded_proto: bool = False  # behind a TLS-terminating proxy: X-Forwarded-Proto says https (HSTS)
    engine_wait: Duration = timedelta(seconds=3)  # an unreachable Temporal is retried this long, then 503

    # observability (observability.py): logs as JSON lines or text (unset: text in the sandbox, else JSON)
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # one line per request (method, path, status, ms; the request id beside it), logger yihoufu.access;
    # YHF_ACCESS_LOG=0 turns it off (phone and ID numbers in a path are masked; the query is never logged)
    access_log: bool = True
    # the worker's Temporal SDK metrics (Prometheus, GET /metrics) and its health answer
    # (GET /healthz, /readyz, /livez), each on host:port; unset: not served
    worker_metrics_address: str = ""
    worker_health_address: str = ""

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        if self.docs_enabled is None:
            self.docs_enabled = self.sandbox
        if self.log_format is None:
            self.log_format = "text" if self.sandbox else "json"
        if self.sms_backend == "aliyun" and not (self.aliyun_access_key_id and self.aliyun_access_key_secret):
            raise ValueError("YHF_SMS_BACKEND=aliyun needs YHF_ALIYUN_ACCESS_KEY_ID and YHF_ALIYUN_ACCESS_KEY_SECRET")
        self._temporal_files()
        self._ui_oidc()
        keys = parse_payload_keys(self.payload_key)
        if self.sandbox:
            self.his_api_key = self.his_api_key or "dev-his-key"
            self.ops_api_key = self.ops_api_key or "dev-ops-key"
            self.data_key = self.data_key or "dev-data-key-change-me"
            self.insurance_bureau_secret = self.insurance_bureau_secret or DEV_BUREAU_SM2_KEY
            self.insurance_bureau_public_key = self.insurance_bureau_public_key or DEV_BUREAU_PLATFORM_PUBLIC_KEY
            self.insurance_bureau_paas_token = self.insurance_bureau_paas_token or DEV_BUREAU_PAAS_TOKEN
            self.insurance_fixmedins_code = self.insurance_fixmedins_code or DEV_FIXMEDINS_CODE
            self.insurance_fixmedins_name = self.insurance_fixmedins_name or self.hospital_name
            self.insurance_admvs = self.insurance_admvs or "110105"
            self.credit_platform_secret = self.credit_platform_secret or "dev-credit-secret"
            self.credit_creditor_code = self.credit_creditor_code or DEV_CREDITOR_CODE
            self.credit_creditor_name = self.credit_creditor_name or self.hospital_name
            self.ebill_app_key = self.ebill_app_key or "dev-ebill-key"
            self.ebill_agency_code = self.ebill_agency_code or DEV_EBILL_AGENCY_CODE
            return self
        self._ebill()
        if self.insurance_bureau_secret == DEV_BUREAU_SM2_KEY or self.insurance_fixmedins_code == DEV_FIXMEDINS_CODE:
            raise ValueError(
                "YHF_INSURANCE_BUREAU_SECRET and YHF_INSURANCE_FIXMEDINS_CODE are the sandbox's outside it"
            )
        if self.insurance_bureau_public_key.lower().removeprefix("04") == DEV_BUREAU_PLATFORM_PUBLIC_KEY:
            raise ValueError("YHF_INSURANCE_BUREAU_PUBLIC_KEY is the sandbox's outside it")
        if self.insurance_bureau_paas_token == DEV_BUREAU_PAAS_TOKEN:
            raise ValueError("YHF_INSURANCE_BUREAU_PAAS_TOKEN is the sandbox's outside it")
        # the code's and the 区划's form are the client's to check: the API and the worker stop at start
        self.insurance_fixmedins_name = self.insurance_fixmedins_name or self.hospital_name
        if self.credit_creditor_code == DEV_CREDITOR_CODE:
            raise ValueError(
                "YHF_CREDIT_CREDITOR_CODE must be this hospital's code at the platform outside the sandbox"
            )
        for name in (
            "his_api_key",
            "ops_api_key",
            "data_key",
            "insurance_bureau_url",
            "insurance_bureau_secret",
            "insurance_bureau_paas_token",
            "insurance_bureau_public_key",
            "credit_platform_url",
            "credit_platform_secret",
        ):
            value = getattr(self, name)
            if not value or value in DEV_SECRETS:
                raise ValueError(f"YHF_{name.upper()} must be set to a real secret outside the sandbox")
        if not keys or any(key in dict(parse_payload_keys(DEV_PAYLOAD_KEY)).values() for _, key in keys):
            raise ValueError("YHF_PAYLOAD_KEY must be set to a real key outside the sandbox")
        return self

    def _ebill(self) -> None:
        """Outside the sandbox, e-bills are on once YHF_EBILL_URL is set; then the key and the
        agency code must be real (never the sandbox's)."""
        if not self.ebill_url:
            return
        if not self.ebill_app_key or self.ebill_app_key in DEV_SECRETS:
            raise ValueError("YHF_EBILL_APP_KEY must be set to a real secret outside the sandbox")
        if self.ebill_agency_code in ("", DEV_EBILL_AGENCY_CODE):
            raise ValueError("YHF_EBILL_AGENCY_CODE must be this hospital's agency code at the e-bill platform")

    def _ui_oidc(self) -> None:
        if self.ui_oidc_jwks_url and not (self.ui_oidc_issuer and self.ui_oidc_audience):
            raise ValueError("YHF_UI_OIDC_JWKS_URL needs YHF_UI_OIDC_ISSUER and YHF_UI_OIDC_AUDIENCE")

    def _temporal_files(self) -> None:
        """mTLS: the certificate and its key set together; each file named must be readable."""
        if bool(self.temporal_tls_cert) != bool(self.temporal_tls_key):
            raise ValueError("YHF_TEMPORAL_TLS_CERT and YHF_TEMPORAL_TLS_KEY are set together (mTLS) or not at all")
        for name in ("temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca"):
            path = getattr(self, name)
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ValueError(f"YHF_{name.upper()}: {path} is not a readable file")

    def payload_keys(self) -> list[tuple[str, bytes]]:
        return parse_payload_keys(self.payload_key)

    def ui_origins(self) -> list[str]:
        """Who may call the codec endpoint from a browser: YHF_UI_ORIGIN, else in the sandbox the
        dev server's UI on its default port."""
        given = [o.strip().rstrip("/") for o in self.ui_origin.split(",") if o.strip()]
        if given or not self.sandbox:
            return given
        return ["http://127.0.0.1:8233", "http://localhost:8233"]

    def credit_creditor(self) -> tuple[str, str]:
        """The creditor a credit report names (code, name); unset outside the sandbox: refused."""
        if not self.credit_creditor_code:
            raise ValueError("YHF_CREDIT_CREDITOR_CODE must be set: the hospital's code at the credit platform")
        return self.credit_creditor_code, self.credit_creditor_name or self.hospital_name

    def payment_policy(self) -> PaymentPolicy:
        return PaymentPolicy(
            timezone=self.timezone,
            arrears_after_seconds=None if isinstance(self.arrears_after, str) else self.arrears_after.total_seconds(),
            default_after_seconds=self.default_after.total_seconds(),
            dunning_every_seconds=self.dunning_every.total_seconds(),
            notice_before_seconds=self.pre_default_notice.total_seconds(),
            refund_window_seconds=self.refund_window.total_seconds(),
            dunning_stop_after_seconds=self.dunning_stop_after.total_seconds(),
            auto_discharge_after_seconds=self.auto_discharge_after.total_seconds(),
            quiet_hours=self.sms_quiet_hours,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
