"""Every channel adapter offers the whole `Channel` interface, and the registry offers what a
hospital configured."""

from __future__ import annotations

import pytest

from config import Settings
from integrations.payments.channels import AlipayChannel, Channel, SandboxChannel, WeChatChannel, build_channels


@pytest.mark.parametrize("adapter", [WeChatChannel, AlipayChannel, SandboxChannel])
def test_every_adapter_is_a_channel(adapter: type) -> None:
    members = {name for name in dir(Channel) if not name.startswith("_")}
    assert members <= set(dir(adapter)), members - set(dir(adapter))


def test_the_registry_offers_what_is_configured() -> None:
    assert list(build_channels(Settings(sandbox=True))) == ["sandbox"]
    sandbox = build_channels(Settings(sandbox=True))["sandbox"]
    assert isinstance(sandbox, Channel) and not sandbox.keeps_statements
