"""Builds the clients of the other parties from the settings: each gateway at its URL (in the
sandbox, the simulator devstack started), or over a transport the caller injects (tests pass
`httpx.ASGITransport(app=<simulator app>)`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from config import Settings
from integrations import credit_platform, insurance_bureau
from integrations.aliyun_sms import AliyunSms
from integrations.ebill import EBillClient
from integrations.payments.channels import Channel
from integrations.payments.registry import build_channels


@dataclass
class Integrations:
    bureau: insurance_bureau.InsuranceBureauClient
    credit: credit_platform.CreditPlatformClient
    sms: AliyunSms | None  # the SMS gateway; None: the outbox row is the delivery (the sandbox)
    channels: dict[str, Channel]  # the payment channels this hospital offers
    ebill: EBillClient | None = None  # the fiscal e-bill platform; None: not configured (no e-bills)


@dataclass(frozen=True)
class Transports:
    """Transports to reach the gateways by, in place of their URLs (tests: the simulators in-process)."""

    bureau: httpx.AsyncBaseTransport | None = None
    credit: httpx.AsyncBaseTransport | None = None
    ebill: httpx.AsyncBaseTransport | None = None


class MissingGateway(RuntimeError):
    """A gateway has neither a URL nor an injected transport: refuse to start."""


def gateway_http(
    setting: str, url: str, transport: httpx.AsyncBaseTransport | None, stack: AsyncExitStack
) -> httpx.AsyncClient:
    if transport is not None:
        http = httpx.AsyncClient(base_url=url or "http://simulator", transport=transport, timeout=20)
    elif url:
        http = httpx.AsyncClient(base_url=url, timeout=20)
    else:
        raise MissingGateway(
            f"YHF_{setting.upper()} is not set: point it at the gateway "
            "(in the sandbox, at its simulator: devstack.py starts one and sets it)"
        )
    stack.push_async_callback(http.aclose)
    return http


def sms_delivery(settings: Settings) -> AliyunSms | None:
    if settings.sms_backend != "aliyun":
        return None
    return AliyunSms(
        access_key_id=settings.aliyun_access_key_id,
        access_key_secret=settings.aliyun_access_key_secret,
        endpoint=settings.aliyun_sms_endpoint,
        protocol=settings.aliyun_sms_protocol,
        sign_name=settings.aliyun_sms_sign_name,
    )


def ebill_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None, stack: AsyncExitStack
) -> EBillClient | None:
    """The e-bill platform's client once YHF_EBILL_URL is set (or a transport is injected)."""
    if not settings.ebill_url and transport is None:
        return None
    return EBillClient(
        gateway_http("ebill_url", settings.ebill_url, transport, stack),
        app_id=settings.ebill_app_id,
        app_key=settings.ebill_app_key,
        agency_code=settings.ebill_agency_code,
        region_code=settings.ebill_region_code,
        place_code=settings.ebill_place_code,
    )


def build_integrations(
    settings: Settings, stack: AsyncExitStack, *, transports: Transports | None = None
) -> Integrations:
    transports = transports or Transports()
    bureau_http = gateway_http("insurance_bureau_url", settings.insurance_bureau_url, transports.bureau, stack)
    credit_http = gateway_http("credit_platform_url", settings.credit_platform_url, transports.credit, stack)
    return Integrations(
        bureau=insurance_bureau.InsuranceBureauClient(
            bureau_http,
            paasid=settings.insurance_bureau_app_id,
            private_key=settings.insurance_bureau_secret,
            fixmedins_code=settings.insurance_fixmedins_code,
            fixmedins_name=settings.insurance_fixmedins_name,
            admvs=settings.insurance_admvs,
            timezone=settings.timezone,
            bureau_public_key=settings.insurance_bureau_public_key,
            paas_token=settings.insurance_bureau_paas_token,
        ),
        credit=credit_platform.CreditPlatformClient(
            credit_http, app_id=settings.credit_platform_app_id, secret=settings.credit_platform_secret
        ),
        sms=sms_delivery(settings),
        channels=build_channels(settings),
        ebill=ebill_client(settings, transports.ebill, stack),
    )
