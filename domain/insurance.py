"""医保脱卡支付 (card-less insurance payment): where one settlement of a bill stands. The saga
that moves it is workflows/insurance.py; the bureau's own records are not ours. Pure: data only."""

from __future__ import annotations

from enum import StrEnum


class SettlementStatus(StrEnum):
    presettled = "presettled"  # the bureau split the bill (pooled, personal, self-pay); nothing is paid
    insurance_settled = "insurance_settled"  # the bureau paid its part; the self-pay part is awaited
    completed = "completed"  # both parts landed and are booked in the ledger
    reversed = "reversed"  # the self-pay part did not land: the insurance part was reversed (冲正)
    failed = "failed"  # the bureau refused to settle, or settled another split, which was reversed (2208)
    refunded = "refunded"  # its insurance part was asked back whole by refunds: the bureau took it back (2208)
    # 医保移动支付 (mode "mobile"): 6202 sent, the cash part awaited at the platform's cashier
    paying = "paying"
    revoked = "revoked"  # 医保移动支付: the order was not paid in time and was taken back (6401)


# 医疗收费项目类别 (med_chrgitm_type, the NHSA dictionary) of our item categories, sent with
# each fee detail (2204); anything else (the registration fee included) is 14 其他费.
CHARGE_ITEM_TYPES: dict[str, str] = {
    "exam": "03",  # 检查费
    "lab": "04",  # 化验费
    "treatment": "05",  # 治疗费
    "infusion": "05",  # 治疗费
    "material": "08",  # 卫生材料费
    "drug": "09",  # 西药费
}
OTHER_CHARGE_ITEM_TYPE = "14"  # 其他费


def charge_item_type(category: str | None) -> str:
    return CHARGE_ITEM_TYPES.get(category or "", OTHER_CHARGE_ITEM_TYPE)
