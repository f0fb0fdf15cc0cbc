"""The payment channels, one list: their names and what the product says of each.

Everything that names a channel derives from `CHANNELS`: the API's accepted channel values,
the payment options a patient is offered (in this order), the labels the app and the
receipts show, and which channels reconciliation asks for a statement.
`integrations.payments.registry` builds each channel from the settings by the same name (a
test holds the two lists to each other). Pure: data only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class ChannelName(StrEnum):
    """A payment channel; also the `method` of a payment taken there."""

    wechat = "wechat"
    alipay = "alipay"
    sandbox = "sandbox"  # ours: exists only in the sandbox, paid by the sandbox endpoint


@dataclass(frozen=True, kw_only=True)
class ChannelInfo:
    label: str  # what the patient reads: the pay button, the receipt's payment line
    keeps_statements: bool  # hands over a daily statement that reconciliation checks


CHANNELS: Mapping[ChannelName, ChannelInfo] = MappingProxyType(
    {
        ChannelName.wechat: ChannelInfo(label="微信支付", keeps_statements=True),
        ChannelName.alipay: ChannelInfo(label="支付宝", keeps_statements=True),
        ChannelName.sandbox: ChannelInfo(label="沙箱支付", keeps_statements=False),
    }
)

# the channels whose statements reconciliation fetches
STATEMENT_CHANNELS = tuple(name for name, info in CHANNELS.items() if info.keeps_statements)
# the counterparts whose totals of the day the statement run checks beside the channels'
# statements: the fiscal e-bill platform (checkTotalData) and the insurance bureau (3201 对总账)
TOTALS_CHECKS = ("ebill", "nhsa")

# what the patient reads for each channel, by name
LABELS: Mapping[str, str] = MappingProxyType({str(name): info.label for name, info in CHANNELS.items()})
