"""The medical-insurance bureau, spoken to as the national platform's 定点医药机构接口规范
(国家医保信息平台, NHSA) defines it: one envelope per transaction, POSTed to the gateway's
`/fsi/api/rsfComIfsService/callService` (one URL; `infno` names the transaction).

Transactions: 9001 签到 (sign-in: `sign_no`), 2201 门诊挂号 (`mdtrt_id`) and 2202 its
revocation, 2204 费用明细上传 (`feedetail[]`) and 2205 its revocation, 2206 预结算, 2207 结算
(`setlinfo`), 2208 结算撤销 (冲正), 2601 冲正交易 (a message taken back by its msgid). The card
lock has no national transaction: it is this hospital's regional extension `yhf-card-lock`
(暂停/恢复医保结算), in the same envelope.

The envelope: `infno`, `msgid` (fixmedins_code + local `yyyyMMddHHmmss` + 4 digits = 30
characters; the idempotency key: a retry of one logical request reuses its msgid, which the
caller allocates and keeps), `mdtrtarea_admvs`, `insuplc_admdvs`, `recer_sys_code`, `cainfo`
(the envelope's SM2 signature, filled in as it is posted) with `signtype` "SM2", `infver`
"V1.0", `opter_type`/`opter`/`opter_name`, `inf_time`, `fixmedins_code`/`fixmedins_name`,
`sign_no` (from 9001) and `input`. The answer: `infcode`
(0 ok, -1 refused), `inf_refmsgid`, `err_msg`, `output`, `refmsg_time`, `respond_time`. Of a
refusal only the code is kept (`[Code]` leading err_msg in our simulator): a real err_msg may
name the person or carry an ID number, so errors carry our own words (`nhsa.refusal_text`). An
answer that is not the bureau's JSON, a 5xx, a stale timestamp and a sign-in refused twice are
retryable; other refusals are final for the request (`NhsaRefused`).

The wire itself (yuan and fen, the JSON, the gateway's x-tif-signature keyed by the paasToken,
the envelope's SM2 `cainfo`, the msgid, reading an answer into its output or its error) is
integrations/nhsa.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from integrations.nhsa import (
    MSGID_LENGTH,
    NhsaRefused,
    SignInInvalid,
    answer_output,
    dumps,
    fen_to_yuan,
    make_msgid,
    refusal_text,
    sm2_public_key,
    sm2_public_key_checked,
    tif_headers,
    with_cainfo,
    yuan_to_fen,
)
from integrations.nhsa_totals import INFNO as DAILY_TOTALS, DailyTotals, totals_result

PATH = "/fsi/api/rsfComIfsService/callService"
INFVER = "V1.0"
SIGNTYPE = "SM2"
RECER_SYS_CODE = "FSI_LOCAL"  # 接收方系统代码
CARD_LOCK = "yhf-card-lock"  # the regional extension: 暂停/恢复医保结算 (not in the national spec)
ACTIONS = ("lock", "unlock")
# The 4-digit sequence of a msgid: the stored requests (db/nhsa.py) draw below SIGN_IN_SEQUENCES,
# the sign-ins (9001, not stored: a sign-in may be repeated) from it up, so the two never collide.
SIGN_IN_SEQUENCES = 9000


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Operator:
    """Who calls (经办人): `opter_type` 1 经办人, 2 自助终端, 3 移动终端."""

    opter: str
    opter_name: str
    opter_type: str = "1"


WORKER = Operator(opter="yhf-worker", opter_name="医后付后台")
PATIENT_APP = Operator(opter="yhf-app", opter_name="医后付患者端", opter_type="3")


@dataclass(frozen=True, kw_only=True)
class FeeDetail:
    """One line of a bill for 2204: our code stands for both catalogue codes in the sandbox (the
    hospital's mapping to the national catalogue, 对照, is the HIS's); `med_chrgitm_type` the
    spec's 医疗收费项目类别 (domain/insurance.py)."""

    feedetl_sn: str
    code: str
    name: str
    med_chrgitm_type: str
    amount_fen: int
    unit_price_fen: int
    quantity: int


@dataclass(frozen=True, kw_only=True)
class Split:
    """setlinfo of 2206/2207, in fen: the pooled fund is `fund_pay_sumamt`, the personal
    account `acct_pay`, self-pay `psn_cash_pay`."""

    mdtrt_id: str
    setl_id: str
    total_fen: int  # medfee_sumamt
    pooled_fen: int  # fund_pay_sumamt 统筹基金
    personal_fen: int  # acct_pay 个人账户
    self_pay_fen: int  # psn_cash_pay 自付


class InsuranceBureauClient:
    """One per process: holds the sign-ins of the day (9001) by operator and local date."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        paasid: str,
        private_key: str,
        fixmedins_code: str,
        fixmedins_name: str,
        admvs: str,
        timezone: str = "Asia/Shanghai",
        clock: Callable[[], datetime] | None = None,
        bureau_public_key: str = "",
        paas_token: str,
    ) -> None:
        sm2_public_key(private_key)  # a bad key stops the start, not the first call
        # the platform's SM2 public key: verifies its notifications (医保移动支付); "" verifies none
        self.bureau_public_key = sm2_public_key_checked(bureau_public_key) if bureau_public_key else ""
        if len(fixmedins_code) != 12:
            raise ValueError("YHF_INSURANCE_FIXMEDINS_CODE is 12 characters (e.g. H11010500001)")
        self.http = http
        self.paasid = paasid
        self._paas_token = paas_token  # the gateway's x-tif-signature is keyed by it
        self._private_key = private_key  # signs each envelope (its cainfo)
        self.fixmedins_code = fixmedins_code
        self.fixmedins_name = fixmedins_name
        self.admvs = admvs
        self.zone = ZoneInfo(timezone)
        self._sign_ins: dict[tuple[str, date], str] = {}  # (opter, local date) -> sign_no
        self._sign_in_locks: dict[tuple[str, date], asyncio.Lock] = {}  # one sign-in at a time
        # the sign-ins' sequences: in turn from a random start (another process starts elsewhere)
        self._sign_in_sequence = secrets.randbelow(10_000 - SIGN_IN_SEQUENCES)
        self._clock = clock or (lambda: datetime.now(UTC))  # a test pins it

    def now(self) -> datetime:
        return self._clock().astimezone(self.zone)

    def local_day(self, at: datetime) -> date:
        """The bureau's day of an aware time: sign-ins hold for one."""
        return at.astimezone(self.zone).date()

    def msgid(self, at: datetime, sequence: int) -> str:
        """The msgid of a stored request (db/nhsa.py): its sequence below SIGN_IN_SEQUENCES."""
        if not 0 <= sequence < SIGN_IN_SEQUENCES:
            raise ValueError(f"a stored request's sequence is below {SIGN_IN_SEQUENCES} (above: the sign-ins')")
        return make_msgid(self.fixmedins_code, at.astimezone(self.zone), sequence)

    def envelope(self, infno: str, msgid: str, operator: Operator, sign_no: str, payload: dict[str, Any]) -> bytes:
        return dumps(
            {
                "infno": infno,
                "msgid": msgid,
                "mdtrtarea_admvs": self.admvs,
                "insuplc_admdvs": self.admvs,
                "recer_sys_code": RECER_SYS_CODE,
                "dev_no": "",
                "dev_safe_info": "",
                "cainfo": "",
                "signtype": SIGNTYPE,
                "infver": INFVER,
                "opter_type": operator.opter_type,
                "opter": operator.opter,
                "opter_name": operator.opter_name,
                "inf_time": self.now().strftime("%Y-%m-%d %H:%M:%S"),
                "fixmedins_code": self.fixmedins_code,
                "fixmedins_name": self.fixmedins_name,
                "sign_no": sign_no,
                "input": payload,
            }
        )

    async def _post(self, infno: str, body: bytes) -> dict[str, Any]:
        headers = tif_headers(
            self.paasid, self._paas_token, timestamp=int(self.now().timestamp()), nonce=secrets.token_hex(16)
        )
        response = await self.http.post(PATH.lstrip("/"), content=with_cainfo(self._private_key, body), headers=headers)
        return answer_output(infno, response.status_code, response.content)

    async def sign_in(self, operator: Operator, day: date) -> str:
        """9001: the operator's sign_no of the day (asked once, then held; calls that come at
        once wait for the one sign-in). Its msgid's sequence is from SIGN_IN_SEQUENCES up, which
        the stored requests never use, in turn; one another process took is drawn again."""
        key = (operator.opter, day)
        lock = self._sign_in_locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._sign_ins.get(key)
            if held:
                return held
            payload = {"signIn": {"opter_no": operator.opter, "mac": "", "ip": ""}}
            for attempt in range(3):
                self._sign_in_sequence = (self._sign_in_sequence + 1) % (10_000 - SIGN_IN_SEQUENCES)
                sequence = SIGN_IN_SEQUENCES + self._sign_in_sequence
                msgid = make_msgid(self.fixmedins_code, self.now(), sequence)
                try:
                    output = await self._post("9001", self.envelope("9001", msgid, operator, "", payload))
                    break
                except NhsaRefused as err:
                    if err.code != "MsgidReused" or attempt == 2:
                        raise
            sign_no = str(output["signinoutb"]["sign_no"])
            for held_key in [k for k in self._sign_ins if k[1] != day]:
                del self._sign_ins[held_key]  # another day's sign-ins hold no more
            for lock_key in [k for k in self._sign_in_locks if k[1] != day]:
                del self._sign_in_locks[lock_key]
            self._sign_ins[key] = sign_no
            return sign_no

    async def call(
        self, infno: str, payload: dict[str, Any], *, msgid: str, operator: Operator, day: date
    ) -> dict[str, Any]:
        """One transaction under the operator's sign-in; a sign_no the bureau no longer takes is
        dropped and the operator signs in again, once (the same msgid: the refused call was not
        recorded). Refused again for the sign-in: retryable (the sign-in, not the request, is at
        fault), never a final answer to the request."""
        if len(msgid) != MSGID_LENGTH:
            raise ValueError(f"a msgid is {MSGID_LENGTH} characters")
        for attempt in range(2):
            sign_no = await self.sign_in(operator, day)
            try:
                return await self._post(infno, self.envelope(infno, msgid, operator, sign_no, payload))
            except SignInInvalid as err:
                if self._sign_ins.get((operator.opter, day)) == sign_no:
                    self._sign_ins.pop((operator.opter, day), None)
                if attempt:
                    raise SignInInvalid(err.code, refusal_text(infno, err.code), retryable=True) from err
        raise AssertionError("unreachable")

    # --- the transactions --------------------------------------------------------------------

    async def set_card_lock(
        self, *, action: str, msgid: str, psn_no: str, reason: str, at: datetime, operator: Operator, day: date
    ) -> bool:
        """yhf-card-lock (regional extension): pause or resume the person's insurance settlement;
        answers whether it is paused afterwards."""
        if action not in ACTIONS:
            raise ValueError(action)
        out = await self.call(
            CARD_LOCK,
            {"data": {"psn_no": psn_no, "action": action, "reason": reason, "at": at.isoformat()}},
            msgid=msgid,
            operator=operator,
            day=day,
        )
        return str(out["lockinfo"]["lock_stas"]) == "1"

    async def register(
        self, *, msgid: str, psn_no: str, begntime: datetime, ipt_otp_no: str, operator: Operator, day: date
    ) -> str:
        """2201 门诊挂号: the 就诊ID (mdtrt_id)."""
        data = {
            "psn_no": psn_no,
            "insutype": "310",  # 职工基本医疗保险
            "begntime": begntime.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S"),
            "mdtrt_cert_type": "01",  # 医保电子凭证
            "mdtrt_cert_no": psn_no,
            "ipt_otp_no": ipt_otp_no,
            "atddr_no": "",
            "dr_name": "",
            "dept_code": "",
            "dept_name": "",
            "caty": "",
        }
        out = await self.call("2201", {"data": data}, msgid=msgid, operator=operator, day=day)
        return str(out["data"]["mdtrt_id"])

    async def revoke_registration(
        self, *, msgid: str, mdtrt_id: str, psn_no: str, ipt_otp_no: str, operator: Operator, day: date
    ) -> None:
        """2202 门诊挂号撤销."""
        data = {"psn_no": psn_no, "mdtrt_id": mdtrt_id, "ipt_otp_no": ipt_otp_no}
        await self.call("2202", {"data": data}, msgid=msgid, operator=operator, day=day)

    async def upload_fees(
        self,
        *,
        msgid: str,
        mdtrt_id: str,
        psn_no: str,
        chrg_bchno: str,
        details: list[FeeDetail],
        at: datetime,
        operator: Operator,
        day: date,
    ) -> None:
        """2204 门诊费用明细信息上传."""
        when = at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")
        feedetail = [
            {
                "feedetl_sn": d.feedetl_sn,
                "mdtrt_id": mdtrt_id,
                "psn_no": psn_no,
                "chrg_bchno": chrg_bchno,
                "dise_codg": "",
                "rxno": "",
                "rx_circ_flag": "0",
                "fee_ocur_time": when,
                "med_list_codg": d.code,
                "medins_list_codg": d.code,
                "det_item_fee_sumamt": fen_to_yuan(d.amount_fen),
                "cnt": d.quantity,
                "pric": fen_to_yuan(d.unit_price_fen),
                "bilg_dept_codg": "",
                "bilg_dept_name": "",
                "bilg_dr_codg": "",
                "bilg_dr_name": "",
                "hosp_appr_flag": "1",
                "med_chrgitm_type": d.med_chrgitm_type,
                "memo": d.name[:100],
            }
            for d in details
        ]
        await self.call("2204", {"feedetail": feedetail}, msgid=msgid, operator=operator, day=day)

    async def revoke_fees(
        self, *, msgid: str, mdtrt_id: str, psn_no: str, chrg_bchno: str, operator: Operator, day: date
    ) -> None:
        """2205 门诊费用明细信息撤销 (the batch)."""
        data = {"mdtrt_id": mdtrt_id, "chrg_bchno": chrg_bchno, "psn_no": psn_no}
        await self.call("2205", {"data": data}, msgid=msgid, operator=operator, day=day)

    def _settle_data(self, mdtrt_id: str, psn_no: str, chrg_bchno: str, total_fen: int) -> dict[str, Any]:
        return {
            "psn_no": psn_no,
            "mdtrt_cert_type": "01",
            "mdtrt_cert_no": psn_no,
            "med_type": "11",  # 普通门诊
            "medfee_sumamt": fen_to_yuan(total_fen),
            "psn_setl_way": "01",  # 按项目结算
            "mdtrt_id": mdtrt_id,
            "chrg_bchno": chrg_bchno,
            "insutype": "310",
            "acct_used_flag": "1",
        }

    async def presettle(
        self, *, msgid: str, mdtrt_id: str, psn_no: str, chrg_bchno: str, total_fen: int, operator: Operator, day: date
    ) -> Split:
        """2206 门诊预结算: the split, nothing paid."""
        data = self._settle_data(mdtrt_id, psn_no, chrg_bchno, total_fen)
        out = await self.call("2206", {"data": data}, msgid=msgid, operator=operator, day=day)
        return _split(out["setlinfo"])

    async def settle(
        self, *, msgid: str, mdtrt_id: str, psn_no: str, chrg_bchno: str, total_fen: int, operator: Operator, day: date
    ) -> Split:
        """2207 门诊结算: the insurance part paid; `setl_id` is the settlement."""
        data = self._settle_data(mdtrt_id, psn_no, chrg_bchno, total_fen)
        out = await self.call("2207", {"data": data}, msgid=msgid, operator=operator, day=day)
        return _split(out["setlinfo"])

    async def reverse(
        self, *, msgid: str, setl_id: str, mdtrt_id: str, psn_no: str, operator: Operator, day: date
    ) -> None:
        """2208 门诊结算撤销 (冲正)."""
        data = {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}
        await self.call("2208", {"data": data}, msgid=msgid, operator=operator, day=day)

    async def cancel(self, *, msgid: str, psn_no: str, omsgid: str, oinfno: str, operator: Operator, day: date) -> None:
        """2601 冲正交易: take back the message `omsgid` (an `oinfno` whose answer never came)."""
        data = {"psn_no": psn_no, "omsgid": omsgid, "oinfno": oinfno}
        await self.call("2601", {"data": data}, msgid=msgid, operator=operator, day=day)

    async def daily_totals(self, totals: DailyTotals, *, msgid: str, operator: Operator, day: date) -> tuple[str, str]:
        """3201 对总账 (integrations/nhsa_totals.py): (stmt_rslt "0" 平 / "1" 不平, stmt_rslt_dscr)."""
        out = await self.call(DAILY_TOTALS, {"data": totals.data()}, msgid=msgid, operator=operator, day=day)
        return totals_result(out)


def _split(setlinfo: dict[str, Any]) -> Split:
    return Split(
        mdtrt_id=str(setlinfo["mdtrt_id"]),
        setl_id=str(setlinfo.get("setl_id") or ""),
        total_fen=yuan_to_fen(setlinfo["medfee_sumamt"]),
        pooled_fen=yuan_to_fen(setlinfo["fund_pay_sumamt"]),
        personal_fen=yuan_to_fen(setlinfo["acct_pay"]),
        self_pay_fen=yuan_to_fen(setlinfo["psn_cash_pay"]),
    )
