"""Every channel adapter offers the whole `Channel` interface, the registry builds every
channel `domain.channels` names (and offers what a hospital configured, in that order), every
channel error is a `ChannelError`, and the sandbox channel verifies its own notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config import Settings
from domain.channels import CHANNELS, LABELS, STATEMENT_CHANNELS, ChannelName
from integrations.payments.alipay import AlipayChannel, AlipayError
from integrations.payments.channels import (
    PAID_STATES,
    Channel,
    ChannelBusy,
    ChannelError,
    ChannelRefused,
    ChannelTimeout,
    Paid,
    StatementError,
)
from integrations.payments.registry import BUILDERS, build_channels
from integrations.payments.sandbox import SandboxChannel, signature
from integrations.payments.wechat import WeChatChannel, WeChatPayError
from simulators.keys import new_rsa_pair

ADAPTERS: list[Any] = [WeChatChannel, AlipayChannel, SandboxChannel]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_adapter_is_a_channel(adapter: Any) -> None:
    members = {name for name in dir(Channel) if not name.startswith("_")}
    assert members <= set(dir(adapter)), members - set(dir(adapter))
    assert adapter.name in CHANNELS and adapter.keeps_statements == CHANNELS[adapter.name].keeps_statements


def test_one_list_of_channels() -> None:
    assert list(CHANNELS) == list(ChannelName) == list(BUILDERS)
    assert {a.name for a in ADAPTERS} == set(ChannelName)
    assert (ChannelName.wechat, ChannelName.alipay) == STATEMENT_CHANNELS
    assert LABELS == {"wechat": "微信支付", "alipay": "支付宝", "sandbox": "沙箱支付"}


def test_the_registry_offers_what_is_configured() -> None:
    assert list(build_channels(Settings(sandbox=True))) == ["sandbox"]
    sandbox = build_channels(Settings(sandbox=True))["sandbox"]
    assert isinstance(sandbox, Channel) and not sandbox.keeps_statements


def test_the_registry_builds_every_channel_in_order(tmp_path: Path) -> None:
    private, public = new_rsa_pair()
    (tmp_path / "private.pem").write_text(private)
    (tmp_path / "public.pem").write_text(public)
    settings = Settings(
        sandbox=True,
        wechat_mchid="1900000109",
        wechat_appid="wx8888888888888888",
        wechat_merchant_serial="5157F09EFDC0",
        wechat_merchant_key_path=str(tmp_path / "private.pem"),
        wechat_apiv3_key="0123456789abcdef0123456789abcdef",
        wechat_platform_public_key_path=str(tmp_path / "public.pem"),
        wechat_platform_public_key_id="PUB_KEY_ID_0114",
        alipay_app_id="2021000000000001",
        alipay_seller_id="2088000000000001",
        alipay_app_private_key_path=str(tmp_path / "private.pem"),
        alipay_public_key_path=str(tmp_path / "public.pem"),
    )
    channels = build_channels(settings)
    assert list(channels) == ["wechat", "alipay", "sandbox"]
    for name, channel in channels.items():
        assert isinstance(channel, Channel) and channel.name == name
    assert isinstance(channels["wechat"], WeChatChannel)
    assert channels["wechat"].client.config.notify_url.endswith("/v1/payments/notify/wechat")
    assert isinstance(channels["alipay"], AlipayChannel)
    assert channels["alipay"].client.config.notify_url.endswith("/v1/payments/notify/alipay")


@pytest.mark.parametrize("error", [ChannelBusy, ChannelTimeout, ChannelRefused, StatementError])
def test_one_error_hierarchy(error: type[Exception]) -> None:
    assert issubclass(error, ChannelError)
    assert issubclass(WeChatPayError, ChannelRefused) and issubclass(AlipayError, ChannelRefused)
    wechat, alipay = (
        WeChatPayError(404, "ORDER_NOT_EXIST", "订单不存在"),
        AlipayError("ACQ.TRADE_NOT_EXIST", "交易不存在"),
    )
    assert (wechat.status, wechat.code, str(wechat)) == (404, "ORDER_NOT_EXIST", "404 ORDER_NOT_EXIST: 订单不存在")
    assert (alipay.code, str(alipay)) == ("ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_NOT_EXIST: 交易不存在")


def test_the_sandbox_channel_verifies_its_notifications() -> None:
    channel = SandboxChannel("the-secret")
    body, headers = channel.notification(payment_id="pay_0123456789abcdef", amount_fen=900)
    told = channel.verify(headers, body)
    assert isinstance(told, Paid) and told.trade_state in PAID_STATES
    assert (told.out_trade_no, told.amount_fen, told.transaction_id) == ("pay_0123456789abcdef", 900, "SBX456789ABCDEF")
    lower = {k.lower(): v for k, v in headers.items()}  # as the route hands them over
    assert channel.verify(lower, body) == told
    assert SandboxChannel("another-secret").verify(headers, body) is None
    assert channel.verify(headers, body.replace(b"900", b"1")) is None  # tampered
    assert channel.verify({}, body) is None
    garbage = b"not json"
    assert channel.verify({"X-Sandbox-Signature": signature("the-secret", garbage)}, garbage) is None
    failed = body.replace(b'"success"', b'"failed"')
    told = channel.verify({"X-Sandbox-Signature": signature("the-secret", failed)}, failed)
    assert isinstance(told, Paid) and told.trade_state not in PAID_STATES
