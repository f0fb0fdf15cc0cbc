"""The medical-insurance bureau, simulated as the national platform's gateway (国家医保信息平台
定点医药机构接口, integrations/insurance_bureau.py describes the envelope and the signature).

It checks what the real one checks: the gateway's x-tif-signature (SHA-256 keyed by the paasToken
it holds for the paasid), the envelope's `cainfo` (SM2 with SM3, by the hospital's public key)
and the timestamp's freshness; a valid `sign_no` (9001) on every transaction but 9001; a
msgid used again with another `infno`/`input` is refused, with the same ones answered as the
first time (stored); at 2206/2207 `medfee_sumamt` is the sum of the 2204 details uploaded for the
`mdtrt_id`; 2207 only against a live 2206 of the same figures; 2208 only on a settled `setl_id`;
a person whose settlement is paused (`yhf-card-lock`, this region's extension) settles nothing;
a 6203's `refdType` fits its parts. Answering a repeated msgid with its first answer is this
simulator's way; 2601 takes a 2201, 2204 or 2207 back by its msgid (omsgid). Its records are in
its own database; `/_sandbox/...` shows them, and `/_sandbox/settle-differently/{psn_no}` makes
the person's next 2207 settle another split than its 2206. `clock` pins its time (its day).

医保移动支付 (6201-6401, the patient's authorisation, the cashier, the signed notification) is
simulators/bureau_mobile.py, served by the same app; 3201 对总账 (the daily totals) is
simulators/bureau_totals.py.

`python -m simulators.bureau PORT PAASID KEY [DB_FILE]` serves it (no file: in memory). KEY is
the hospital's SM2 public key (hex); in the sandbox it may be given the private key, as devstack
and compose have it, of which it keeps only the public half. The paasToken is
YHF_INSURANCE_BUREAU_PAAS_TOKEN's (the sandbox's by default) and the platform's signing key
SIMULATOR_BUREAU_PLATFORM_KEY's (the sandbox's by default)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import Response
from gmssl import sm2, sm3
from sqlalchemy import Boolean, Integer, MetaData, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from config import DEV_BUREAU_PAAS_TOKEN, DEV_BUREAU_PLATFORM_KEY
from simulators.store import Store, UtcDateTime, serve

PATH = "/fsi/api/rsfComIfsService/callService"
MAX_SKEW_SECONDS = 300
ZONE = ZoneInfo("Asia/Shanghai")
CURVE = sm2.default_ecc_table

# The simulated bureau's rules: these 医疗收费项目类别 are covered (检查, 化验, 治疗, 卫生材料,
# 西药, 中成药); the pooled fund pays 60% of them, the personal account what it can of the rest,
# the patient everything else.
COVERED_TYPES = frozenset({"03", "04", "05", "08", "09", "11"})
POOLED_PERCENT = 60
PERSONAL_ACCOUNT_FEN = 20_000  # every simulated insured person starts with 200 yuan


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012 - SQLAlchemy reads it from the class


class CardEvent(Base):
    __tablename__ = "card_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)  # the msgid
    patient_id: Mapped[str] = mapped_column(String(40), index=True)  # psn_no
    action: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class SignIn(Base):
    __tablename__ = "sign_in"
    sign_no: Mapped[str] = mapped_column(String(40), primary_key=True)
    opter: Mapped[str] = mapped_column(String(40))
    day: Mapped[str] = mapped_column(String(10))  # the local date it holds for
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Message(Base):
    """Every msgid answered: what was asked (hash of infno and input) and the answer sent."""

    __tablename__ = "message"
    msgid: Mapped[str] = mapped_column(String(30), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class Treatment(Base):
    """2201: one outpatient visit (就诊) of a person."""

    __tablename__ = "treatment"
    mdtrt_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    psn_no: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(10))  # registered | revoked


class FeeDetail(Base):
    __tablename__ = "fee_detail"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mdtrt_id: Mapped[str] = mapped_column(String(30), index=True)
    feedetl_sn: Mapped[str] = mapped_column(String(40))
    chrg_bchno: Mapped[str] = mapped_column(String(40))
    med_chrgitm_type: Mapped[str] = mapped_column(String(6))
    fen: Mapped[int]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Settlement(Base):
    """2206 (presettled), then 2207 (settled, with a setl_id), then perhaps 2208 (reversed)."""

    __tablename__ = "settlement"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mdtrt_id: Mapped[str] = mapped_column(String(30), index=True)
    setl_id: Mapped[str | None] = mapped_column(String(30), unique=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)  # psn_no
    chrg_bchno: Mapped[str] = mapped_column(String(40))
    total_fen: Mapped[int]
    pooled_fen: Mapped[int]
    personal_fen: Mapped[int]
    self_pay_fen: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # presettled | settled | reversed | superseded
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MobileOrder(Base):
    """医保移动支付: an order uploaded (6201), paid (6202), refunded (6203) or revoked (6401)."""

    __tablename__ = "mobile_pay_order"  # (not "mobile_order": a sandbox file of before has that table, in its old form)
    pay_ord_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pay_token: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(40), index=True)  # psnNo
    med_org_ord: Mapped[str] = mapped_column(String(40))
    total_fen: Mapped[int]
    fund_fen: Mapped[int]
    personal_fen: Mapped[int]
    cash_fen: Mapped[int]
    refunded_fund_fen: Mapped[int] = mapped_column(default=0)
    refunded_personal_fen: Mapped[int] = mapped_column(default=0)
    refunded_cash_fen: Mapped[int] = mapped_column(default=0)
    refund_sns: Mapped[str] = mapped_column(Text, default="")  # appRefdSn taken, one a line
    # ordStas: 1 uploaded, 2 paying (the cash part at the cashier), 6 paid, 7 refunded, 12 revoked, 15 failed
    status: Mapped[str] = mapped_column(String(4))
    pay_auth_no: Mapped[str] = mapped_column(String(64), default="")  # the authorisation it was uploaded with
    notify_url: Mapped[str] = mapped_column(Text, default="")
    setl_id: Mapped[str] = mapped_column(String(30), default="")  # once paid
    cashier_url: Mapped[str] = mapped_column(Text, default="")  # while paying
    notified: Mapped[str] = mapped_column(String(40), default="")  # the notification's last answer ("200")


class PayAuth(Base):
    """A payAuthNo the 医保电子凭证 app gave (POST /mobile/authorize): one person's, for one order."""

    __tablename__ = "pay_auth"
    pay_auth_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(40))  # psnNo
    expires_at: Mapped[datetime]
    pay_ord_id: Mapped[str | None] = mapped_column(String(40))  # the order it was used for


class SplitShift(Base):
    """The sandbox's knob (POST /_sandbox/settle-differently/{psn_no}): the person's next 2207
    settles `fen` less from the pooled fund and as much more self-pay than its 2206 said."""

    __tablename__ = "split_shift"
    patient_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    fen: Mapped[int]


class Undoable(Base):
    """A message 2601 may take back (冲正交易 by omsgid): a 2201, 2204 or 2207 that went through,
    whose person and input are kept; `undone` is the 2601's answer once taken back."""

    __tablename__ = "undoable"
    msgid: Mapped[str] = mapped_column(String(30), primary_key=True)
    infno: Mapped[str] = mapped_column(String(16))
    psn_no: Mapped[str] = mapped_column(String(40))
    effect: Mapped[str] = mapped_column(Text)  # JSON: what it made (mdtrt_id, setl_id, feedetl_sns)
    undone: Mapped[str | None] = mapped_column(Text)


class Refused(Exception):
    """infcode -1; `code` leads the text as `[Code]`, which the client reads."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")


# SM2 (GB/T 32918) on Python integers, written here apart from the client's: the curve's
# constants from gmssl, the hash SM3 gmssl's (its own SM2 point arithmetic now and then fails).
_P, _N = int(CURVE["p"], 16), int(CURVE["n"], 16)
_A, _B = int(CURVE["a"], 16), int(CURVE["b"], 16)
_G = (int(CURVE["g"][:64], 16), int(CURVE["g"][64:], 16))


def _ec_add(p: tuple[int, int] | None, q: tuple[int, int] | None) -> tuple[int, int] | None:
    if p is None or q is None:
        return q if p is None else p
    if p[0] == q[0] and (p[1] + q[1]) % _P == 0:
        return None
    m = (
        (3 * p[0] * p[0] + _A) * pow(2 * p[1], _P - 2, _P)  # tangent
        if p == q
        else (q[1] - p[1]) * pow(q[0] - p[0], _P - 2, _P)  # chord
    )
    x = (m * m - p[0] - q[0]) % _P
    return x, (m * (p[0] - x) - p[1]) % _P


def _ec_mul(k: int, p: tuple[int, int] | None) -> tuple[int, int] | None:
    acc = None
    for bit in bin(k)[2:]:  # double and add, from the top bit
        acc = _ec_add(acc, acc)
        if bit == "1":
            acc = _ec_add(acc, p)
    return acc


def public_key_of(key: str) -> str:
    """The hospital's public key (128 hex) from what the simulator is given: the public key
    (with or without "04"), or in the sandbox the private key (64 hex)."""
    key = key.strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", key) and 0 < int(key, 16) < _N - 1:
        point = _ec_mul(int(key, 16), _G)
        assert point is not None
        return f"{point[0]:064x}{point[1]:064x}"
    if len(key) == 130 and key.startswith("04"):
        key = key[2:]
    if not re.fullmatch(r"[0-9a-f]{128}", key):
        raise ValueError("the hospital's key: an SM2 public key (128 hex) or, in the sandbox, its private key")
    x, y = int(key[:64], 16), int(key[64:], 16)
    if (y * y - x * x * x - _A * x - _B) % _P:
        raise ValueError("the hospital's public key is not on the SM2 curve")
    return key


def sm2_verified(public_key: str, message: bytes, signature: str) -> bool:
    """SM2 with SM3 over `message`, the signer's id the default 1234567812345678."""
    if not re.fullmatch(r"[0-9a-fA-F]{128}", signature):
        return False
    q = (int(public_key[:64], 16), int(public_key[64:], 16))
    r, s = int(signature[:64], 16), int(signature[64:], 16)
    t = (r + s) % _N
    if not (1 <= r < _N and 1 <= s < _N) or t == 0:
        return False
    za = sm3.sm3_hash(
        list(bytes.fromhex("0080" + b"1234567812345678".hex() + CURVE["a"] + CURVE["b"] + CURVE["g"] + public_key))
    )
    e = int(sm3.sm3_hash(list(bytes.fromhex(za) + message)), 16)
    point = _ec_add(_ec_mul(s, _G), _ec_mul(t, q))
    return point is not None and (e + point[0]) % _N == r


def _usable(key: str) -> str:
    """The public key, or "" for a key that is none (a test's made-up secret): then every request
    of that paasid is refused, as a gateway holding a wrong key would."""
    try:
        return public_key_of(key)
    except ValueError:
        return ""


def verify_signature(public_key: str, paas_token: str, headers: Mapping[str, str], body: bytes) -> None:
    """The gateway's checks, written here apart from the client's signing: x-tif-signature the
    SHA-256 of timestamp + paasToken + nonce + timestamp (the caller holds the paasid's token), the
    timestamp fresh, and the envelope's cainfo the SM2 signature, by the hospital's key, of the body
    as sent with cainfo's value emptied."""
    paasid, ts, nonce, signature = (
        headers.get("x-tif-paasid", ""),
        headers.get("x-tif-timestamp", ""),
        headers.get("x-tif-nonce", ""),
        headers.get("x-tif-signature", ""),
    )
    if not (paasid and ts and nonce and signature):
        raise Refused("MissingSignature", "x-tif-paasid, x-tif-timestamp, x-tif-nonce and x-tif-signature are required")
    if not ts.isdigit() or abs(now().timestamp() - int(ts)) > MAX_SKEW_SECONDS:
        raise Refused("StaleRequest", "x-tif-timestamp is more than 5 minutes off")
    expected = hashlib.sha256((ts + paas_token + nonce + ts).encode()).hexdigest()
    if not paas_token or not hmac.compare_digest(expected, signature):
        raise Refused("SignatureDoesNotMatch", "签名验证失败 (x-tif-signature)")
    match = re.search(rb'"cainfo":"([0-9a-f]{128})"', body)
    if match is None:
        raise Refused("MissingSignature", "cainfo (the message's SM2 signature) is required")
    field, cainfo = match.group(0), match.group(1).decode()
    if body.count(field) != 1 or not sm2_verified(public_key, body.replace(field, b'"cainfo":""'), cainfo):
        raise Refused("CainfoDoesNotMatch", "报文签名验证失败 (cainfo)")


def fen(value: Any) -> int:
    """Yuan on the wire (a Decimal, at most 2 decimals) to fen; anything else refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise Refused("InvalidParameter", f"not an amount: {value!r}")
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value() or cents < 0:
        raise Refused("InvalidParameter", f"not an amount in yuan with 2 decimals: {value}")
    return int(cents)


def yuan(amount_fen: int) -> Decimal:
    return (Decimal(amount_fen) / 100).quantize(Decimal("0.01"))


# The bureau's clock, for the request being handled (simulator_app's `clock`): its day (a sign-in
# holds for one), the signature's freshness, the times it writes.
_clock: ContextVar[Callable[[], datetime]] = ContextVar("bureau_clock", default=lambda: datetime.now(UTC))


def now() -> datetime:
    return _clock.get()().astimezone(UTC)


def today() -> str:
    return now().astimezone(ZONE).date().isoformat()


def new_id(prefix: str) -> str:
    return prefix + now().astimezone(ZONE).strftime("%Y%m%d") + f"{secrets.randbelow(10**12):012d}"


def card_events(session: Session, patient_id: str) -> list[CardEvent]:
    return list(
        session.scalars(select(CardEvent).where(CardEvent.patient_id == patient_id).order_by(CardEvent.id)).all()
    )


def is_locked(events: list[CardEvent]) -> bool:
    return bool(events) and events[-1].action == "lock"


def personal_balance(session: Session, patient_id: str) -> int:
    spent = session.scalars(
        select(Settlement.personal_fen).where(Settlement.patient_id == patient_id, Settlement.status == "settled")
    ).all()
    mobile = session.execute(
        select(MobileOrder.personal_fen, MobileOrder.refunded_personal_fen).where(
            MobileOrder.patient_id == patient_id, MobileOrder.status.in_(("2", "6", "7"))
        )
    ).all()
    return PERSONAL_ACCOUNT_FEN - sum(spent) - sum(paid - back for paid, back in mobile)


def split_bill(details: list[FeeDetail], personal_balance_fen: int) -> tuple[int, int, int]:
    """(pooled, personal, self-pay) of the uploaded details, by the simulated rules."""
    total = sum(d.fen for d in details)
    covered = sum(d.fen for d in details if d.med_chrgitm_type in COVERED_TYPES)
    pooled = covered * POOLED_PERCENT // 100
    personal = max(0, min(covered - pooled, personal_balance_fen))
    return pooled, personal, total - pooled - personal


def settlement_out(row: Settlement) -> dict[str, Any]:
    return {
        "presettle_id": row.mdtrt_id,
        "status": row.status,
        "total_fen": row.total_fen,
        "pooled_fen": row.pooled_fen,
        "personal_fen": row.personal_fen,
        "self_pay_fen": row.self_pay_fen,
        "settlement_no": row.setl_id,
    }


def setlinfo(row: Settlement) -> dict[str, Any]:
    return {
        "setl_id": row.setl_id or "",
        "mdtrt_id": row.mdtrt_id,
        "psn_no": row.patient_id,
        "medfee_sumamt": yuan(row.total_fen),
        "fund_pay_sumamt": yuan(row.pooled_fen),
        "hifp_pay": yuan(row.pooled_fen),
        "acct_pay": yuan(row.personal_fen),
        "psn_cash_pay": yuan(row.self_pay_fen),
        "psn_part_amt": yuan(row.personal_fen + row.self_pay_fen),
        "balc": yuan(0),
        "setl_time": row.updated_at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"),
    }


def text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Refused("MissingParameter", f"{name} is required")
    return value


def data_of(inp: Mapping[str, Any]) -> Mapping[str, Any]:
    data = inp.get("data")
    if not isinstance(data, Mapping):
        raise Refused("MissingParameter", "input.data is required")
    return data


def live_treatment(session: Session, data: Mapping[str, Any]) -> Treatment:
    row = session.get(Treatment, text(data, "mdtrt_id"))
    if row is None or row.status != "registered" or row.psn_no != text(data, "psn_no"):
        raise Refused("TreatmentNotFound", "就诊信息不存在或已撤销")
    return row


def uploaded(session: Session, mdtrt_id: str, chrg_bchno: str | None = None) -> list[FeeDetail]:
    query = select(FeeDetail).where(FeeDetail.mdtrt_id == mdtrt_id, FeeDetail.revoked.is_(False))
    if chrg_bchno is not None:
        query = query.where(FeeDetail.chrg_bchno == chrg_bchno)
    return list(session.scalars(query.order_by(FeeDetail.id)).all())


Handler = Callable[[Session, Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]


def sign_in(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    sign_no = new_id("SN")
    session.add(SignIn(sign_no=sign_no, opter=text(env, "opter"), day=today()))
    return {"signinoutb": {"sign_time": now().astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"), "sign_no": sign_no}}


def card_lock(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    action, psn_no = text(data, "action"), text(data, "psn_no")
    if action not in ("lock", "unlock"):
        raise Refused("InvalidParameter", "action is lock or unlock")
    try:
        at = datetime.fromisoformat(text(data, "at"))
    except ValueError:
        raise Refused("InvalidParameter", "at is not a time") from None
    session.add(
        CardEvent(
            request_id=text(env, "msgid"),
            patient_id=psn_no,
            action=action,
            reason=str(data.get("reason", ""))[:200],
            at=at if at.tzinfo else at.replace(tzinfo=UTC),
        )
    )
    session.flush()
    locked = is_locked(card_events(session, psn_no))
    return {"lockinfo": {"psn_no": psn_no, "lock_stas": "1" if locked else "0"}}


def register(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row = Treatment(mdtrt_id=new_id("MD"), psn_no=text(data, "psn_no"), status="registered")
    session.add(row)
    return {"data": {"mdtrt_id": row.mdtrt_id, "psn_no": row.psn_no, "ipt_otp_no": data.get("ipt_otp_no", "")}}


def revoke_registration(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    row = live_treatment(session, data_of(inp))
    if session.scalar(select(Settlement).where(Settlement.mdtrt_id == row.mdtrt_id, Settlement.status == "settled")):
        raise Refused("AlreadySettled", "该就诊已结算，请先撤销结算")
    row.status = "revoked"
    return {}


def upload_fees(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    details = inp.get("feedetail")
    if not isinstance(details, list) or not details:
        raise Refused("MissingParameter", "input.feedetail is required")
    result = []
    for d in details:
        if not isinstance(d, Mapping):
            raise Refused("InvalidParameter", "a feedetail is an object")
        row = live_treatment(session, d)
        amount, price, count = fen(d.get("det_item_fee_sumamt")), fen(d.get("pric")), d.get("cnt")
        if not isinstance(count, int | Decimal) or isinstance(count, bool) or Decimal(count) * price != amount:
            raise Refused("InvalidParameter", f"{d.get('feedetl_sn')}: det_item_fee_sumamt is not cnt x pric")
        text(d, "med_list_codg")
        session.add(
            FeeDetail(
                mdtrt_id=row.mdtrt_id,
                feedetl_sn=text(d, "feedetl_sn"),
                chrg_bchno=text(d, "chrg_bchno"),
                med_chrgitm_type=str(d.get("med_chrgitm_type") or "14"),
                fen=amount,
            )
        )
        result.append({"feedetl_sn": d["feedetl_sn"], "det_item_fee_sumamt": yuan(amount), "cnt": count})
    return {"result": result}


def revoke_fees(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row = live_treatment(session, data)
    if session.scalar(select(Settlement).where(Settlement.mdtrt_id == row.mdtrt_id, Settlement.status == "settled")):
        raise Refused("AlreadySettled", "该就诊已结算，请先撤销结算")
    for d in uploaded(session, row.mdtrt_id, text(data, "chrg_bchno")):
        d.revoked = True
    return {}


def _checked_total(session: Session, data: Mapping[str, Any]) -> tuple[Treatment, list[FeeDetail], int]:
    row = live_treatment(session, data)
    details = uploaded(session, row.mdtrt_id, text(data, "chrg_bchno"))
    total = fen(data.get("medfee_sumamt"))
    if not details or total != sum(d.fen for d in details):
        raise Refused("TotalMismatch", "medfee_sumamt 与上传的费用明细合计不符")
    if is_locked(card_events(session, row.psn_no)):
        raise Refused("CardLocked", "参保人医保结算已暂停（卡锁定），不能结算")
    return row, details, total


def presettle(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row, details, total = _checked_total(session, data)
    at = now()
    for earlier in session.scalars(
        select(Settlement).where(Settlement.mdtrt_id == row.mdtrt_id, Settlement.status == "presettled")
    ):
        earlier.status = "superseded"  # only the newest pre-settlement may be settled
    pooled, personal, self_pay = split_bill(details, personal_balance(session, row.psn_no))
    settlement = Settlement(
        mdtrt_id=row.mdtrt_id,
        setl_id=None,
        patient_id=row.psn_no,
        chrg_bchno=text(data, "chrg_bchno"),
        total_fen=total,
        pooled_fen=pooled,
        personal_fen=personal,
        self_pay_fen=self_pay,
        status="presettled",
        created_at=at,
        updated_at=at,
    )
    session.add(settlement)
    return {"setlinfo": setlinfo(settlement)}


def settle(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row, _, total = _checked_total(session, data)
    live = session.scalar(
        select(Settlement).where(Settlement.mdtrt_id == row.mdtrt_id, Settlement.status == "presettled")
    )
    if live is None:
        raise Refused("NotPresettled", "该就诊没有有效的预结算，请先预结算 (2206)")
    if (live.total_fen, live.chrg_bchno) != (total, text(data, "chrg_bchno")):
        raise Refused("PresettleMismatch", "结算信息与预结算不一致，请重新预结算")
    if live.personal_fen > personal_balance(session, row.psn_no):
        raise Refused("BalanceChanged", "个人账户余额不足，请重新预结算")
    shift = session.get(SplitShift, row.psn_no)
    if shift is not None:  # the sandbox's knob: this 2207 settles another split than its 2206
        live.pooled_fen -= shift.fen
        live.self_pay_fen += shift.fen
        session.delete(shift)
    live.status, live.setl_id, live.updated_at = "settled", new_id("ST"), now()
    return {"setlinfo": setlinfo(live)}


def reverse(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row = session.scalar(select(Settlement).where(Settlement.setl_id == text(data, "setl_id")))
    if row is None or row.mdtrt_id != text(data, "mdtrt_id") or row.patient_id != text(data, "psn_no"):
        raise Refused("SettlementNotFound", "结算信息不存在")
    if row.status != "settled":
        raise Refused("NotSettled", f"该结算不是已结算状态 ({row.status})")
    row.status, row.updated_at = "reversed", now()
    return {"setlinfo": {**setlinfo(row), "setl_id": row.setl_id}}


# --- 2601 冲正交易: a message taken back by its msgid (its answer never came) -------------------

REVERSIBLE = ("2201", "2204", "2207")


def keep_undoable(session: Session, msgid: str, infno: str, inp: Mapping[str, Any], output: Mapping[str, Any]) -> None:
    """After a 2201, 2204 or 2207 went through: what 2601 needs to take it back."""
    if infno == "2201":
        psn_no, effect = str(inp["data"]["psn_no"]), {"mdtrt_id": output["data"]["mdtrt_id"]}
    elif infno == "2204":
        lines = inp["feedetail"]
        psn_no = str(lines[0]["psn_no"])
        effect = {"mdtrt_id": lines[0]["mdtrt_id"], "feedetl_sns": [str(d["feedetl_sn"]) for d in lines]}
    elif infno == "2207":
        psn_no, effect = str(inp["data"]["psn_no"]), {"setl_id": output["setlinfo"]["setl_id"]}
    else:
        return
    session.add(Undoable(msgid=msgid, infno=infno, psn_no=psn_no, effect=json.dumps(effect), undone=None))


def cancel(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    """2601: undo what the message `omsgid` did (2207: its settlement reversed; 2204: its details
    revoked; 2201: its registration revoked). Asked again under another msgid: the same answer."""
    data = data_of(inp)
    psn_no, omsgid, oinfno = text(data, "psn_no"), text(data, "omsgid"), text(data, "oinfno")
    if oinfno not in REVERSIBLE:
        raise Refused("NotReversible", f"交易 {oinfno} 不支持冲正")
    row = session.get(Undoable, omsgid)
    if row is None:
        seen = session.get(Message, omsgid)
        if seen is not None and json.loads(seen.answer).get("infcode") != 0:
            raise Refused("OriginalFailed", "原交易未成功，无需冲正")
        raise Refused("OriginalNotFound", "原交易不存在")
    if row.psn_no != psn_no:
        raise Refused("OriginalNotFound", "原交易不存在")  # another person's: not told apart from none
    if row.infno != oinfno:
        raise Refused("InvalidParameter", f"oinfno is {row.infno} for this omsgid")
    if row.undone is not None:
        return dict(json.loads(row.undone))
    effect = json.loads(row.effect)
    if oinfno == "2207":
        settlement = session.scalar(select(Settlement).where(Settlement.setl_id == effect["setl_id"]))
        if settlement is None or settlement.status != "settled":
            raise Refused("NotSettled", "该结算不是已结算状态")
        settlement.status, settlement.updated_at = "reversed", now()
    else:
        treatment = session.get(Treatment, effect["mdtrt_id"])
        assert treatment is not None
        if session.scalar(
            select(Settlement).where(Settlement.mdtrt_id == treatment.mdtrt_id, Settlement.status == "settled")
        ):
            raise Refused("AlreadySettled", "该就诊已结算，请先撤销结算")
        if oinfno == "2201":
            treatment.status = "revoked"
        for d in uploaded(session, treatment.mdtrt_id):
            if oinfno == "2201" or d.feedetl_sn in effect["feedetl_sns"]:
                d.revoked = True
    out = {"data": {"omsgid": omsgid, "oinfno": oinfno, "psn_no": psn_no}}
    row.undone = json.dumps(out)
    return out


# --- 医保移动支付 (6201 upload, 6202 pay, 6203 refund, 6301 query, 6401 revoke): simulators/bureau_mobile.py


HANDLERS: dict[str, Handler] = {
    "9001": sign_in,
    "2201": register,
    "2202": revoke_registration,
    "2204": upload_fees,
    "2205": revoke_fees,
    "2206": presettle,
    "2207": settle,
    "2208": reverse,
    "2601": cancel,
    "yhf-card-lock": card_lock,
}


def request_hash(infno: str, inp: Any) -> str:
    """What makes two requests under one msgid the same: the transaction and its input (the
    envelope's sign_no and inf_time change on a retry)."""
    canon = json.dumps({"infno": infno, "input": inp}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def answer(env: Mapping[str, Any], infcode: int, output: dict[str, Any], err_msg: str = "") -> dict[str, Any]:
    at = now().astimezone(ZONE).strftime("%Y%m%d%H%M%S%f")[:17]
    return {
        "infcode": infcode,
        "inf_refmsgid": f"{env.get('mdtrtarea_admvs', '')}{at}{secrets.randbelow(10**6):06d}",
        "refmsg_time": at,
        "respond_time": at,
        "err_msg": err_msg,
        "warn_msg": "",
        "output": output,
    }


def encode(data: dict[str, Any]) -> str:
    """JSON with Decimals as bare numbers (yuan with their two decimals), as the bureau writes them."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"\u0000yuan:{value}"
        raise TypeError(type(value).__name__)

    return re.sub(r'"\\u0000yuan:(-?\d+\.\d\d)"', r"\1", json.dumps(data, ensure_ascii=False, default=default))


def wire(data: dict[str, Any], status: int = 200) -> Response:
    return Response(encode(data).encode(), status_code=status, media_type="application/json")


def simulator_app(
    keys_by_paasid: dict[str, str],
    store: Store | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    platform_key: str = DEV_BUREAU_PLATFORM_KEY,
    paas_tokens: Mapping[str, str] | None = None,
) -> FastAPI:
    """The bureau's side, knowing each paasid's public key and paasToken (`paas_tokens` None: the
    sandbox's, DEV_BUREAU_PAAS_TOKEN, for each); `store` None: a fresh one in memory. `clock`: the
    bureau's time (a test pins it, its day with it); the wall clock by default. `platform_key`: the
    platform's SM2 private key its 医保移动支付 notifications are signed with."""
    from simulators import bureau_mobile, bureau_totals  # its sections of the bureau; they import this module

    app = FastAPI(title="Insurance bureau (simulated NHSA gateway)", docs_url=None, redoc_url=None, openapi_url=None)
    db = store or Store(Base.metadata)
    app.state.store = db
    keys = {paasid: _usable(key) for paasid, key in keys_by_paasid.items()}
    tokens = dict(paas_tokens) if paas_tokens is not None else dict.fromkeys(keys, DEV_BUREAU_PAAS_TOKEN)
    handlers = {**HANDLERS, **bureau_mobile.HANDLERS, **bureau_totals.HANDLERS}  # 3201: bureau_totals.py
    mobile = bureau_mobile.Mobile(app, db, clock, platform_key)

    @app.post(PATH)
    async def call_service(request: Request) -> Any:
        token = _clock.set(clock) if clock is not None else None  # this request's clock
        try:
            with bureau_mobile.request_scope(str(request.base_url)) as settled:
                body = await request.body()
                response = answer_request(db, keys, request.headers, body, handlers, tokens)
            await mobile.notify(settled)  # the orders it paid, notified after its transaction
            return response
        finally:
            if token is not None:
                _clock.reset(token)

    inspection(app, db)
    mobile.mount()
    return app


def answer_request(
    db: Store,
    keys: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    handlers: Mapping[str, Handler] = HANDLERS,
    tokens: Mapping[str, str] | None = None,
) -> Response:
    paasid = headers.get("x-tif-paasid", "")
    public_key = keys.get(paasid)
    try:
        if not public_key:  # unknown, or known with a key that is none (nothing verifies)
            raise Refused("InvalidPaasid", "unknown x-tif-paasid, or no usable key for it")
        token = tokens.get(paasid, "") if tokens is not None else DEV_BUREAU_PAAS_TOKEN
        verify_signature(public_key, token, headers, body)
    except Refused as err:
        return wire(answer({}, -1, {}, str(err)), 401)
    try:
        env = json.loads(body, parse_float=Decimal)
        if not isinstance(env, dict):
            raise ValueError
    except ValueError:
        return wire(answer({}, -1, {}, "[MalformedBody] body is not JSON"), 400)
    return wire(handle(db, env, handlers))


def handle(db: Store, env: dict[str, Any], handlers: Mapping[str, Handler] = HANDLERS) -> dict[str, Any]:
    infno, msgid, inp = env.get("infno"), env.get("msgid"), env.get("input")
    if not isinstance(infno, str) or infno not in handlers:
        return answer(env, -1, {}, f"[UnknownInfno] 交易编号不存在: {infno}")
    if not isinstance(msgid, str) or len(msgid) != 30 or not msgid.startswith(str(env.get("fixmedins_code"))):
        return answer(env, -1, {}, "[InvalidMsgid] msgid 为定点机构编号+时间+4位顺序号，共30位")
    if not isinstance(inp, dict):
        return answer(env, -1, {}, "[MissingParameter] input is required")
    digest = request_hash(infno, inp)
    with db.transaction() as session:
        seen = session.get(Message, msgid)
        if seen is not None:
            if seen.request_hash != digest:
                return answer(env, -1, {}, "[MsgidReused] 报文ID重复：该 msgid 已用于另一笔不同的交易")
            return dict(json.loads(seen.answer, parse_float=Decimal))
        if infno != "9001":
            signed = session.get(SignIn, str(env.get("sign_no") or ""))
            if signed is None or signed.revoked or signed.day != today() or signed.opter != env.get("opter"):
                return answer(env, -1, {}, "[SignInInvalid] 签到编号无效或已过期，请重新签到 (9001)")
        try:
            with session.begin_nested():
                out = answer(env, 0, handlers[infno](session, env, inp))
                keep_undoable(session, msgid, infno, inp, out["output"])
        except Refused as err:
            out = answer(env, -1, {}, str(err))
        session.add(Message(msgid=msgid, request_hash=digest, answer=encode(out), at=now()))
        return out


def inspection(app: FastAPI, db: Store) -> None:
    """For the sandbox (GET /v1/sandbox/...) and the tests: what the bureau recorded."""

    @app.get("/_sandbox/cards/{patient_id}")
    async def card(patient_id: str) -> Any:
        with db.transaction() as session:
            events = card_events(session, patient_id)
            return {
                "locked": is_locked(events),
                "events": [{"action": e.action, "at": e.at.isoformat(), "reason": e.reason} for e in events],
            }

    @app.get("/_sandbox/settlements/{patient_id}")
    async def settlements(patient_id: str) -> Any:
        with db.transaction() as session:
            rows = session.scalars(
                select(Settlement)
                .where(Settlement.patient_id == patient_id, Settlement.status != "superseded")
                .order_by(Settlement.id)
            ).all()
            return [settlement_out(r) for r in rows]

    @app.get("/_sandbox/treatments/{patient_id}")
    async def treatments(patient_id: str) -> Any:
        """The person's visits at the bureau (2201) and the sum of their live fee details (2204)."""
        with db.transaction() as session:
            rows = session.scalars(select(Treatment).where(Treatment.psn_no == patient_id)).all()
            return [
                {
                    "mdtrt_id": t.mdtrt_id,
                    "status": t.status,
                    "fees_fen": sum(d.fen for d in uploaded(session, t.mdtrt_id)),
                }
                for t in rows
            ]

    @app.post("/_sandbox/settle-differently/{patient_id}")
    async def settle_differently(patient_id: str, fen: int = 100) -> Any:
        """The person's next 2207 answers another split than its 2206 (`fen` moved from the
        pooled fund to self-pay), as a bureau whose rules changed in between would."""
        with db.transaction() as session:
            session.merge(SplitShift(patient_id=patient_id, fen=fen))
            return {"patient_id": patient_id, "fen": fen}

    @app.post("/_sandbox/sign-ins/revoke")
    async def revoke_sign_ins() -> Any:
        """Every sign_no given so far stops holding (as at the end of the bureau's day)."""
        with db.transaction() as session:
            rows = session.scalars(select(SignIn).where(SignIn.revoked.is_(False))).all()
            for row in rows:
                row.revoked = True
            return {"revoked": len(rows)}


if __name__ == "__main__":  # python -m simulators.bureau PORT PAASID KEY [DB_FILE]
    port, paasid, key = int(sys.argv[1]), sys.argv[2], public_key_of(sys.argv[3])  # a bad key stops the start
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    # the platform's signing key (its notifications): the sandbox's unless given
    platform = os.environ.get("SIMULATOR_BUREAU_PLATFORM_KEY") or DEV_BUREAU_PLATFORM_KEY
    public_key_of(platform)  # a bad key stops the start
    # the paasToken it issued with the paasid: the app's, or the sandbox's
    token = os.environ.get("YHF_INSURANCE_BUREAU_PAAS_TOKEN") or DEV_BUREAU_PAAS_TOKEN
    store = Store(Base.metadata, path)
    serve(simulator_app({paasid: key}, store, platform_key=platform, paas_tokens={paasid: token}), port)
