"""The provincial fiscal e-bill platform (财政电子票据平台), medical interface: the outpatient
bill of a settled visit (医疗门诊收费电子票据), its write-off (冲红), its state, and the day's
totals check. Shaped after the widely deployed Bosssoft (博思) medical interface.

Wire protocol (every service alike)
-----------------------------------
Request: `POST {YHF_EBILL_URL}/api/medical/{service}` with a JSON body

    {"appid": "...", "data": "...", "noise": "...", "version": "1.0", "sign": "..."}

- `appid`: the hospital's application id at the platform; `YHF_EBILL_APP_KEY` is its key.
- `data`: base64 (standard alphabet, padded) of the UTF-8 JSON object of the service's
  parameters. Amounts are yuan as JSON numbers with exactly two decimals (`12.30`); inside
  the product money stays integer fen, converted exactly with `Decimal` both ways (a third
  decimal is refused, never rounded).
- `noise`: a fresh random nonce (32 hex characters) per request.
- `sign`: upper-case hex MD5 of `appid=A&data=D&noise=N&version=V&key=K`: the four
  parameters sorted by name, `name=value` joined by `&`, then `&key=` and the app key.

Answer: HTTP 200 and `{"result": "S0000" | error code, "message": base64(UTF-8 JSON)}`. On
S0000 the message is the service's result object; otherwise `{"errMsg": "..."}`. Codes:

    S0000 success                     E1001 sign wrong          E1002 appid unknown
    E1003 envelope/base64/JSON bad    E1004 parameter missing or of the wrong type
    E1005 amounts inconsistent (chargeDetail, listDetail, payChannelDetail or the
          accountPay + fundPay + otherfundPay + ownPay split differ from totalAmt, or a
          third decimal)
    E1006 busNo already used for another bill body   E1007 no such bill
    E1008 the bill is not in a state for that (a write-off of a written-off bill)
    E1009 unknown service             E9999 the platform's own failure (retry)

A refusal (any E1xxx) is final for that body and raised as `EBillRefused`; E9999, HTTP 5xx
and transport errors are transient (`EBillUnavailable`, or httpx's): the caller retries with
the same busNo, which the platform deduplicates (same busNo and same body: the same bill).

Services
--------
`invoiceEBillOutpatient` (开具门诊电子票据): busNo (our idempotency key: the receipt id and
version), busType "02" (门诊), payer, busDateTime (yyyyMMddHHmmssSSS, Beijing time), placeCode
(开票点), payee, author, totalAmt, agencyCode, regionCode, patientNo, visitNo, category (the
department), consultationDate (yyyyMMdd), accountPay (医保个人账户), fundPay (医保统筹基金),
otherfundPay, ownPay (the rest: cash, channels, waived), payChannelDetail
[{payChannelCode, payChannelValue}], chargeDetail [{sortNo, chargeCode, chargeName, unit,
std, number, amt, selfAmt}] (by category) and listDetail (the lines). Answer: billBatchCode
(票据代码), billNo (票据号码), random (校验码), createTime, billQRCode (base64 PNG) and
pictureUrl (the platform's page of the bill).

What the payer's part carries: the bill is a legal receipt that names its payer (缴款人), so
`payer` is the patient's name; nothing else personal: no ID number, phone, e-mail or
insurance card (the platform's optional notification fields: we notify the patient
ourselves), and `patientNo`/`visitNo` are our opaque ids.

`writeOffEBill` (冲红): billBatchCode, billNo, reason, operator, busDateTime, placeCode,
agencyCode. Answer: eScarletBillBatchCode, eScarletBillNo, eScarletRandom, createTime (the red
bill).

`getEBillStatesByBillInfo`: billBatchCode, billNo, agencyCode. Answer: state ("1" valid, "2"
written off), isScarlet ("0"/"1") and, written off, scarletBillBatchCode, scarletBillNo and
(where the platform gives it) scarletCreateTime, the red bill's time.

`checkTotalData` (总量核对): busDate (yyyyMMdd, Beijing time), agencyCode, copyNum and totalAmt
(bills issued that day, all of them, written off since or not), writeOffNum and writeOffAmt
(write-offs made that day). Answer: checkResult "1" (the platform's totals agree) or "0", and
the platform's own four figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx

from integrations.ebill_wire import (
    SUCCESS,
    decode_data,
    envelope,
    fen_to_yuan,
    parse_wire_time,
    wire_day,
    wire_time,
    yuan_to_fen,
)

PATH = "api/medical/"
# each call: a receipt may take three (write-off, state, issue) inside its activity's 30 s
CALL_TIMEOUT_SECONDS = 8.0


class Code:
    sign_wrong = "E1001"
    appid_unknown = "E1002"
    malformed = "E1003"
    parameter = "E1004"
    amounts = "E1005"
    bus_no_conflict = "E1006"
    no_such_bill = "E1007"
    wrong_state = "E1008"
    unknown_service = "E1009"
    platform_failure = "E9999"


class EBillRefused(Exception):
    """The platform refused the request (final for that body)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class EBillUnavailable(Exception):
    """The platform failed or did not answer properly: try again (the busNo makes it safe)."""


# --- what we send and get back -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChargeLine:
    code: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int
    amount_fen: int


@dataclass(frozen=True, kw_only=True)
class OutpatientBill:
    bus_no: str  # our idempotency key
    bus_time: datetime  # when our receipt was issued
    payer: str  # the patient's name (the bill names its payer)
    patient_no: str  # our opaque patient id
    visit_no: str  # our opaque visit id
    department: str
    visit_date: date
    total_fen: int
    account_pay_fen: int  # 医保个人账户
    fund_pay_fen: int  # 医保统筹基金
    channels: list[tuple[str, int]]  # (payChannelCode, fen), summing to total_fen
    lines: list[ChargeLine]
    remark: str = ""

    @property
    def own_pay_fen(self) -> int:
        return self.total_fen - self.account_pay_fen - self.fund_pay_fen


@dataclass(frozen=True, kw_only=True)
class IssuedEBill:
    batch_code: str  # 票据代码
    bill_no: str  # 票据号码
    random: str  # 校验码
    created_at: datetime
    qr_code: str  # base64 PNG
    picture_url: str


@dataclass(frozen=True, kw_only=True)
class WrittenOff:
    batch_code: str  # the red bill's
    bill_no: str
    random: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class EBillState:
    valid: bool  # state "1"; "2": written off
    scarlet: bool  # a red bill was issued against it
    scarlet_batch_code: str = ""
    scarlet_bill_no: str = ""
    scarlet_at: datetime | None = None  # when it was written off, if the platform says


@dataclass(frozen=True, kw_only=True)
class DayTotals:
    issued: int
    issued_fen: int
    written_off: int
    written_off_fen: int


@dataclass(frozen=True, kw_only=True)
class TotalsCheck:
    matched: bool
    platform: DayTotals
    ours: DayTotals = field(default_factory=lambda: DayTotals(issued=0, issued_fen=0, written_off=0, written_off_fen=0))


CATEGORY_NAMES = {
    "exam": "检查费",
    "lab": "化验费",
    "treatment": "治疗费",
    "drug": "西药费",
    "infusion": "治疗费",
    "material": "卫生材料费",
    "registration": "挂号费",
    "other": "其他费",
}


def charge_detail(lines: list[ChargeLine]) -> list[dict[str, Any]]:
    """chargeDetail: one row per charge category (收费项目), in first-seen order."""
    by_category: dict[str, int] = {}
    for line in lines:
        by_category[line.category] = by_category.get(line.category, 0) + line.amount_fen
    return [
        {
            "sortNo": n,
            "chargeCode": category,
            "chargeName": CATEGORY_NAMES.get(category, "其他费"),
            "unit": "项",
            "std": fen_to_yuan(fen),
            "number": 1,
            "amt": fen_to_yuan(fen),
            "selfAmt": Decimal("0.00"),
        }
        for n, (category, fen) in enumerate(by_category.items(), start=1)
    ]


def list_detail(lines: list[ChargeLine]) -> list[dict[str, Any]]:
    return [
        {
            "listDetailNo": str(n),
            "chargeCode": line.category,
            "chargeName": CATEGORY_NAMES.get(line.category, "其他费"),
            "code": line.code,
            "name": line.name,
            "unit": "项",
            "std": fen_to_yuan(line.unit_price_fen),
            "number": line.quantity,
            "amt": fen_to_yuan(line.amount_fen),
            "selfAmt": Decimal("0.00"),
        }
        for n, line in enumerate(lines, start=1)
    ]


class EBillClient:
    """One hospital's calls to the platform. `http` is based at the platform's URL."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        app_id: str,
        app_key: str,
        agency_code: str,
        region_code: str,
        place_code: str,
        payee: str = "医后付",
    ) -> None:
        self._http = http
        self._app_id = app_id
        self._key = app_key
        self._agency = agency_code
        self._region = region_code
        self._place = place_code
        self._payee = payee

    async def call(self, service: str, params: dict[str, Any]) -> dict[str, Any]:
        """One signed call; the platform's result object, or EBillRefused / EBillUnavailable."""
        body = envelope(self._app_id, self._key, params)
        response = await self._http.post(PATH + service, json=body, timeout=CALL_TIMEOUT_SECONDS)
        if response.status_code >= 500:
            raise EBillUnavailable(f"{service}: HTTP {response.status_code}")
        try:
            answer = response.json()
            result, message = str(answer["result"]), decode_data(str(answer["message"]))
        except (ValueError, KeyError, TypeError) as e:
            raise EBillUnavailable(
                f"{service}: an answer not in the platform's shape (HTTP {response.status_code})"
            ) from e
        if result == SUCCESS and isinstance(message, dict):
            return message
        text = str(message.get("errMsg", "")) if isinstance(message, dict) else str(message)
        if result == Code.platform_failure or result == SUCCESS:
            raise EBillUnavailable(f"{service}: {result} {text}")
        raise EBillRefused(result, text)

    def outpatient_params(self, bill: OutpatientBill) -> dict[str, Any]:
        """invoiceEBillOutpatient's parameters: the same bill gives the same parameters (a retry
        with its busNo is the same body)."""
        return {
            "busNo": bill.bus_no,
            "busType": "02",
            "payer": bill.payer,
            "busDateTime": wire_time(bill.bus_time),
            "placeCode": self._place,
            "payee": self._payee,
            "author": self._payee,
            "totalAmt": fen_to_yuan(bill.total_fen),
            "remark": bill.remark,
            "agencyCode": self._agency,
            "regionCode": self._region,
            "payerType": "1",
            "patientNo": bill.patient_no,
            "visitNo": bill.visit_no,
            "category": bill.department,
            "consultationDate": wire_day(bill.visit_date),
            "accountPay": fen_to_yuan(bill.account_pay_fen),
            "fundPay": fen_to_yuan(bill.fund_pay_fen),
            "otherfundPay": Decimal("0.00"),
            "ownPay": fen_to_yuan(bill.own_pay_fen),
            "payChannelDetail": [
                {"payChannelCode": code, "payChannelValue": fen_to_yuan(fen)} for code, fen in bill.channels
            ],
            "chargeDetail": charge_detail(bill.lines),
            "listDetail": list_detail(bill.lines),
        }

    async def issue_outpatient(self, bill: OutpatientBill) -> IssuedEBill:
        m = await self.call("invoiceEBillOutpatient", self.outpatient_params(bill))
        return IssuedEBill(
            batch_code=str(m["billBatchCode"]),
            bill_no=str(m["billNo"]),
            random=str(m["random"]),
            created_at=parse_wire_time(str(m["createTime"])),
            qr_code=str(m.get("billQRCode", "")),
            picture_url=str(m.get("pictureUrl", "")),
        )

    async def write_off(self, batch_code: str, bill_no: str, *, reason: str, at: datetime) -> WrittenOff:
        m = await self.call(
            "writeOffEBill",
            {
                "billBatchCode": batch_code,
                "billNo": bill_no,
                "reason": reason,
                "operator": self._payee,
                "busDateTime": wire_time(at),
                "placeCode": self._place,
                "agencyCode": self._agency,
            },
        )
        return WrittenOff(
            batch_code=str(m["eScarletBillBatchCode"]),
            bill_no=str(m["eScarletBillNo"]),
            random=str(m["eScarletRandom"]),
            created_at=parse_wire_time(str(m["createTime"])),
        )

    async def state(self, batch_code: str, bill_no: str) -> EBillState:
        m = await self.call(
            "getEBillStatesByBillInfo", {"billBatchCode": batch_code, "billNo": bill_no, "agencyCode": self._agency}
        )
        return EBillState(
            valid=str(m["state"]) == "1",
            scarlet=str(m.get("isScarlet", "0")) == "1",
            scarlet_batch_code=str(m.get("scarletBillBatchCode", "")),
            scarlet_bill_no=str(m.get("scarletBillNo", "")),
            scarlet_at=parse_wire_time(str(m["scarletCreateTime"])) if m.get("scarletCreateTime") else None,
        )

    async def check_totals(self, day: date, ours: DayTotals) -> TotalsCheck:
        m = await self.call(
            "checkTotalData",
            {
                "busDate": wire_day(day),
                "agencyCode": self._agency,
                "copyNum": ours.issued,
                "totalAmt": fen_to_yuan(ours.issued_fen),
                "writeOffNum": ours.written_off,
                "writeOffAmt": fen_to_yuan(ours.written_off_fen),
            },
        )
        platform = DayTotals(
            issued=int(m["copyNum"]),
            issued_fen=yuan_to_fen(m["totalAmt"]),
            written_off=int(m["writeOffNum"]),
            written_off_fen=yuan_to_fen(m["writeOffAmt"]),
        )
        return TotalsCheck(matched=str(m["checkResult"]) == "1", platform=platform, ours=ours)
