"""Builds the clients of the other parties from the settings: the real gateways where
they are configured, else their simulators in-process (the sandbox)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from db.pii import Pii
from integrations import credit_platform, insurance_bureau
from integrations.aliyun_sms import AliyunSmsSender
from integrations.payments.channels import Channel, build_channels
from integrations.sms import OutboxSender, SmsSender


@dataclass
class Integrations:
    bureau: insurance_bureau.InsuranceBureauClient
    credit: credit_platform.CreditPlatformClient
    sms: SmsSender
    channels: dict[str, Channel]  # the payment channels this hospital offers


def gateway_http(url: str, sim_app: object, stack: AsyncExitStack) -> httpx.AsyncClient:
    if url:
        http = httpx.AsyncClient(base_url=url, timeout=20)
    else:
        http = httpx.AsyncClient(base_url="http://simulator", transport=httpx.ASGITransport(app=sim_app), timeout=20)
    stack.push_async_callback(http.aclose)
    return http


def sms_sender(settings: Settings, factory: async_sessionmaker[AsyncSession], pii: Pii) -> SmsSender:
    if settings.sms_backend == "aliyun":
        return AliyunSmsSender(factory, pii, access_key_id=settings.aliyun_access_key_id,
                               access_key_secret=settings.aliyun_access_key_secret,
                               endpoint=settings.aliyun_sms_endpoint, protocol=settings.aliyun_sms_protocol,
                               sign_name=settings.aliyun_sms_sign_name)
    return OutboxSender(factory, pii)


def build_integrations(settings: Settings, factory: async_sessionmaker[AsyncSession],
                       stack: AsyncExitStack) -> Integrations:
    bureau_http = gateway_http(settings.insurance_bureau_url, insurance_bureau.simulator_app(
        factory, {settings.insurance_bureau_app_id: settings.insurance_bureau_secret}), stack)
    credit_http = gateway_http(settings.credit_platform_url, credit_platform.simulator_app(
        factory, {settings.credit_platform_app_id: settings.credit_platform_secret}), stack)
    return Integrations(
        bureau=insurance_bureau.InsuranceBureauClient(bureau_http, app_id=settings.insurance_bureau_app_id,
                                                      secret=settings.insurance_bureau_secret),
        credit=credit_platform.CreditPlatformClient(credit_http, app_id=settings.credit_platform_app_id,
                                                    secret=settings.credit_platform_secret),
        sms=sms_sender(settings, factory, Pii(settings.data_key)),
        channels=build_channels(settings),
    )
