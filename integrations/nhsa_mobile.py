"""医保移动支付 (NHSA mobile payment) over the bureau's envelope (integrations/insurance_bureau.py):
6201 fee details up (the order: `payOrdId`, `payToken` and its split), 6202 pay it with the
patient's authorisation from the 医保电子凭证 app (`payAuthNo`), 6203 refund it (each refund
its own `appRefdSn`), 6301 ask where it stands, 6401 take an unpaid order back.

ordStas: "1" uploaded, "2" paying (the cash part awaited at the platform's cashier, `cashierUrl`),
"6" paid (a `setlId`), "7" refunded, "12" revoked, "15" failed. An order without a cash part is
paid at 6202; one with a cash part is paid when the patient pays it at the cashier.

The platform's notification of a paid (or failed) order: POST to the `notifyUrl` given at 6201
(modeled there: the real platform registers it at onboarding), JSON body
`{payOrdId, medOrgOrd, ordStas, setlId, feeSumamt, fundPay, psnAcctPay, ownPayAmt, notifyTime}`,
answered 200 `{"code": "SUCCESS"}`. Its headers `x-tif-paasid` (the platform's id),
`x-tif-timestamp` (unix seconds), `x-tif-nonce` and `x-tif-signature`:
    signed_text = x-tif-timestamp + x-tif-nonce + x-tif-paasid + lowercase hex SM3(body)
    x-tif-signature = lowercase hex r||s of SM2 with SM3 (default user id) of signed_text, by the
        platform's private key; verified with its public key (YHF_INSURANCE_BUREAU_PUBLIC_KEY).
This scheme is modeled (integrations/nhsa.py `signed_text`): the province's own is agreed at
onboarding. `verify_notification` checks it and the timestamp's age, and reads the body.

Its fields are camelCase as the mobile-payment spec writes them; amounts are yuan on the wire,
fen here (integrations/nhsa.py). Each call takes the msgid of its logical request, as every
bureau call does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from integrations.gateway import GatewayError
from integrations.insurance_bureau import FeeDetail, InsuranceBureauClient, Operator
from integrations.nhsa import fen_to_yuan, loads, tif_sm2_refusal, yuan_to_fen

UPLOADED, PAYING, PAID, REFUNDED, REVOKED, FAILED = "1", "2", "6", "7", "12", "15"  # ordStas
AUTHORIZE_PATH = "/mobile/authorize"  # the 医保电子凭证 app's authorisation, modeled for the sandbox
NOTICE_FIELDS = ("payOrdId", "medOrgOrd", "ordStas", "setlId", "feeSumamt", "fundPay", "psnAcctPay", "ownPayAmt")


@dataclass(frozen=True, kw_only=True)
class MobileOrder:
    pay_ord_id: str
    pay_token: str
    status: str  # ordStas
    total_fen: int  # feeSumamt
    fund_fen: int  # fundPay
    personal_fen: int  # psnAcctPay
    cash_fen: int  # ownPayAmt
    cashier_url: str = ""  # cashierUrl: where the patient pays the cash part ("" when none)
    setl_id: str = ""  # setlId: the settlement ("" until paid)


def _order(out: dict[str, Any]) -> MobileOrder:
    return MobileOrder(
        pay_ord_id=str(out["payOrdId"]),
        pay_token=str(out["payToken"]),
        status=str(out["ordStas"]),
        total_fen=yuan_to_fen(out["feeSumamt"]),
        fund_fen=yuan_to_fen(out["fundPay"]),
        personal_fen=yuan_to_fen(out["psnAcctPay"]),
        cash_fen=yuan_to_fen(out["ownPayAmt"]),
        cashier_url=str(out.get("cashierUrl") or ""),
        setl_id=str(out.get("setlId") or ""),
    )


@dataclass(frozen=True, kw_only=True)
class MobileRefund:
    """The 6203 answer: refStatus (SUCC done; FAIL refused; anything else still on its way),
    the appRefdSn it answers, the order's ordStas after it, and the amounts it says went back
    (None: the answer names none)."""

    pay_ord_id: str
    app_refd_sn: str
    ref_status: str
    status: str  # ordStas afterwards
    total_fen: int | None = None  # totlRefdAmt
    fund_fen: int | None = None  # fundRefdAmt
    personal_fen: int | None = None  # psnAcctRefdAmt
    cash_fen: int | None = None  # cashRefdAmt


def _refund(out: dict[str, Any]) -> MobileRefund:
    def amount(name: str) -> int | None:
        value = out.get(name)
        return None if value is None or value == "" else yuan_to_fen(value)

    return MobileRefund(
        pay_ord_id=str(out.get("payOrdId") or ""),
        app_refd_sn=str(out.get("appRefdSn") or ""),
        ref_status=str(out.get("refStatus") or ""),
        status=str(out.get("ordStas") or ""),
        total_fen=amount("totlRefdAmt"),
        fund_fen=amount("fundRefdAmt"),
        personal_fen=amount("psnAcctRefdAmt"),
        cash_fen=amount("cashRefdAmt"),
    )


@dataclass(frozen=True, kw_only=True)
class MobileNotice:
    """The platform's notification of an order, verified and read (amounts in fen)."""

    pay_ord_id: str
    med_org_ord: str
    status: str  # ordStas
    setl_id: str
    total_fen: int
    fund_fen: int
    personal_fen: int
    cash_fen: int


class NotificationRefused(Exception):
    """A notification not taken: `code` MissingSignature, StaleTimestamp, SignatureDoesNotMatch,
    NoPublicKey or UnreadableNotification."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def verify_notification(
    public_key: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    max_age: timedelta = timedelta(minutes=5),
) -> MobileNotice:
    """The notification if the platform signed it (its public key) within `max_age` of `now`."""
    if not public_key:
        raise NotificationRefused("NoPublicKey", "the platform's public key is not configured")
    lowered = {k.lower(): v for k, v in headers.items()}
    refusal = tif_sm2_refusal(public_key, lowered, body, now=now, max_age=max_age)
    if refusal is not None:
        raise NotificationRefused(refusal, "the notification's signature does not verify")
    try:
        data = loads(body)
        if not isinstance(data, dict) or any(name not in data for name in NOTICE_FIELDS):
            raise ValueError("a field is missing")
        return MobileNotice(
            pay_ord_id=_text(data["payOrdId"]),
            med_org_ord=_text(data["medOrgOrd"]),
            status=_text(data["ordStas"]),
            setl_id=str(data["setlId"] or ""),
            total_fen=_fen(data["feeSumamt"]),
            fund_fen=_fen(data["fundPay"]),
            personal_fen=_fen(data["psnAcctPay"]),
            cash_fen=_fen(data["ownPayAmt"]),
        )
    except (ValueError, TypeError) as err:
        raise NotificationRefused("UnreadableNotification", "the notification's body is not readable") from err


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a text")
    return value


def _fen(value: Any) -> int:
    if not isinstance(value, Decimal | int) or isinstance(value, bool):
        raise ValueError("not an amount")
    return yuan_to_fen(value)


def refund_type(insurance_fen: int, cash_fen: int) -> str:
    """refdType of a 6203: HI the insurance part only (the fund and/or the personal account),
    CASH the cash part only, ALL both (a personal-account part counts as HI: with cash, ALL)."""
    if insurance_fen and cash_fen:
        return "ALL"
    return "HI" if insurance_fen else "CASH"


class MobilePayment:
    def __init__(self, bureau: InsuranceBureauClient) -> None:
        self._bureau = bureau

    async def sandbox_authorize(self, psn_no: str) -> str:
        """A payAuthNo for the person, as the 医保电子凭证 app gives one (modeled: the sandbox's
        stand-in for the patient's phone asks the simulated platform)."""
        response = await self._bureau.http.post(AUTHORIZE_PATH.lstrip("/"), json={"psnNo": psn_no})
        data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or not isinstance(data.get("payAuthNo"), str):
            code = str(data.get("code") or response.status_code)
            raise GatewayError(code, "the platform gave no payAuthNo", retryable=response.status_code >= 500)
        return str(data["payAuthNo"])

    def verify_notification(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> MobileNotice:
        """verify_notification with the platform's public key the bureau client holds."""
        return verify_notification(self._bureau.bureau_public_key, headers, body, now=now)

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
        notify_url: str,
    ) -> MobileOrder:
        """6201 费用明细上传: the order and its split; `notify_url` where the platform notifies
        its outcome (modeled in `data`: the real platform registers it at onboarding)."""
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
            "notifyUrl": notify_url,
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
        """6202 支付下单: the fund and the personal account pay their parts; without a cash part the
        order is paid ("6", a setl_id), else it is paying ("2") until the cashier (`cashier_url`)."""
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
    ) -> MobileRefund:
        """6203 医保退费: answers the refund as the bureau has it (refStatus, appRefdSn, amounts)."""
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
        return _refund(await self._bureau.call("6203", {"data": data}, msgid=msgid, operator=operator, day=day))

    async def query(self, *, msgid: str, order: MobileOrder, operator: Operator, day: date) -> MobileOrder:
        """6301 医保订单结算结果查询: the order, its setl_id once paid, its cashier_url while paying."""
        data = {"payOrdId": order.pay_ord_id, "payToken": order.pay_token}
        return _order(await self._bureau.call("6301", {"data": data}, msgid=msgid, operator=operator, day=day))

    async def revoke(self, *, msgid: str, order: MobileOrder, operator: Operator, day: date) -> str:
        """6401 费用明细上传撤销 (an unpaid order only, "1" or "2"): answers the ordStas."""
        data = {"payOrdId": order.pay_ord_id, "payToken": order.pay_token}
        out = await self._bureau.call("6401", {"data": data}, msgid=msgid, operator=operator, day=day)
        return str(out["ordStas"])
