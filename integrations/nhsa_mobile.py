"""医保移动支付 (NHSA mobile payment) over the bureau's envelope (integrations/insurance_bureau.py):
6201 fee details up (the order: `payOrdId`, `payToken` and its split), 6202 pay it with the
patient's authorisation from the 医保电子凭证 app (`payAuthNo`), 6203 refund it (each refund
its own `appRefdSn`), 6301 ask where it stands, 6401 take an unpaid order back.

Its fields are camelCase as the mobile-payment spec writes them; amounts are yuan on the wire,
fen here (integrations/nhsa.py). Each call takes the msgid of its logical request, as every
bureau call does. Not yet used by the product: the card-less payment goes 2201-2208."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from integrations.insurance_bureau import FeeDetail, InsuranceBureauClient, Operator
from integrations.nhsa import fen_to_yuan, yuan_to_fen

UPLOADED, PAID, REFUNDED, REVOKED = "1", "6", "7", "12"  # ordStas


@dataclass(frozen=True, kw_only=True)
class MobileOrder:
    pay_ord_id: str
    pay_token: str
    status: str  # ordStas
    total_fen: int  # feeSumamt
    fund_fen: int  # fundPay
    personal_fen: int  # psnAcctPay
    cash_fen: int  # ownPayAmt


def _order(out: dict[str, Any]) -> MobileOrder:
    return MobileOrder(
        pay_ord_id=str(out["payOrdId"]),
        pay_token=str(out["payToken"]),
        status=str(out["ordStas"]),
        total_fen=yuan_to_fen(out["feeSumamt"]),
        fund_fen=yuan_to_fen(out["fundPay"]),
        personal_fen=yuan_to_fen(out["psnAcctPay"]),
        cash_fen=yuan_to_fen(out["ownPayAmt"]),
    )


def refund_type(insurance_fen: int, cash_fen: int) -> str:
    """refdType of a 6203: HI the insurance part only (the fund and/or the personal account),
    CASH the cash part only, ALL both (a personal-account part counts as HI: with cash, ALL)."""
    if insurance_fen and cash_fen:
        return "ALL"
    return "HI" if insurance_fen else "CASH"


class MobilePayment:
    def __init__(self, bureau: InsuranceBureauClient) -> None:
        self._bureau = bureau

    async def upload(
        self,
        *,
        msgid: str,
        psn_no: str,
        pay_auth_no: str,
        med_org_ord: str,
        details: list[FeeDetail],
        at: datetime,
        operator: Operator,
        day: date,
    ) -> MobileOrder:
        """6201 费用明细上传: the order and its split."""
        when = at.astimezone(self._bureau.zone).strftime("%Y-%m-%d %H:%M:%S")
        data = {
            "orgCodg": self._bureau.fixmedins_code,
            "psnNo": psn_no,
            "payAuthNo": pay_auth_no,
            "medOrgOrd": med_org_ord,
            "chrgBchno": med_org_ord,
            "medType": "11",
            "begntime": when,
            "medfeeSumamt": fen_to_yuan(sum(d.amount_fen for d in details)),
            "acctUsedFlag": "1",
            "feedetail": [
                {
                    "feedetlSn": d.feedetl_sn,
                    "medListCodg": d.code,
                    "medinsListCodg": d.code,
                    "medChrgitmType": d.med_chrgitm_type,
                    "detItemFeeSumamt": fen_to_yuan(d.amount_fen),
                    "cnt": d.quantity,
                    "pric": fen_to_yuan(d.unit_price_fen),
                    "feeOcurTime": when,
                }
                for d in details
            ],
        }
        out = await self._bureau.call("6201", {"data": data}, msgid=msgid, operator=operator, day=day)
        return _order(out)

    async def pay(
        self, *, msgid: str, order: MobileOrder, pay_auth_no: str, operator: Operator, day: date
    ) -> MobileOrder:
        """6202 支付下单: the fund and the personal account pay their parts."""
        data = {
            "payOrdId": order.pay_ord_id,
            "payToken": order.pay_token,
            "payAuthNo": pay_auth_no,
            "orgCodg": self._bureau.fixmedins_code,
        }
        return _order(await self._bureau.call("6202", {"data": data}, msgid=msgid, operator=operator, day=day))

    async def refund(
        self,
        *,
        msgid: str,
        pay_ord_id: str,
        app_refd_sn: str,
        fund_fen: int,
        personal_fen: int,
        cash_fen: int,
        at: datetime,
        operator: Operator,
        day: date,
    ) -> str:
        """6203 医保退费: answers the order's ordStas afterwards."""
        data = {
            "payOrdId": pay_ord_id,
            "appRefdSn": app_refd_sn,
            "appRefdTime": at.astimezone(self._bureau.zone).strftime("%Y%m%d%H%M%S"),
            "totlRefdAmt": fen_to_yuan(fund_fen + personal_fen + cash_fen),
            "fundRefdAmt": fen_to_yuan(fund_fen),
            "psnAcctRefdAmt": fen_to_yuan(personal_fen),
            "cashRefdAmt": fen_to_yuan(cash_fen),
            "refdType": refund_type(fund_fen + personal_fen, cash_fen),
        }
        out = await self._bureau.call("6203", {"data": data}, msgid=msgid, operator=operator, day=day)
        return str(out["ordStas"])

    async def query(self, *, msgid: str, order: MobileOrder, operator: Operator, day: date) -> MobileOrder:
        """6301 医保订单结算结果查询."""
        data = {"payOrdId": order.pay_ord_id, "payToken": order.pay_token}
        return _order(await self._bureau.call("6301", {"data": data}, msgid=msgid, operator=operator, day=day))

    async def revoke(self, *, msgid: str, order: MobileOrder, operator: Operator, day: date) -> str:
        """6401 费用明细上传撤销 (an unpaid order only): answers the ordStas."""
        data = {"payOrdId": order.pay_ord_id, "payToken": order.pay_token}
        out = await self._bureau.call("6401", {"data": data}, msgid=msgid, operator=operator, day=day)
        return str(out["ordStas"])
