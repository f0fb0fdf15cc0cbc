"""How each payment channel of `domain.channels.CHANNELS` is built from the settings: one
builder a name, answering None when this hospital has not set the channel up.

Adding a channel: its name and label in domain/channels.py, its client and adapter in a
module here, its builder below, its settings in config.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from config import Settings
from domain.channels import CHANNELS, ChannelName
from integrations.payments import alipay, sandbox, wechat
from integrations.payments.channels import Channel

BUILDERS: Mapping[ChannelName, Callable[[Settings], Channel | None]] = MappingProxyType(
    {
        ChannelName.wechat: wechat.build,
        ChannelName.alipay: alipay.build,
        ChannelName.sandbox: sandbox.build,
    }
)


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The channels this hospital offers, by name, in the order they are offered."""
    channels: dict[str, Channel] = {}
    for name in CHANNELS:
        if (channel := BUILDERS[name](settings)) is not None:
            channels[name] = channel
    return channels
