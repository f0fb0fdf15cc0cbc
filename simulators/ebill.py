"""The provincial fiscal e-bill platform (财政电子票据平台), medical interface, simulated: the
protocol of integrations/ebill.py, written again here from its description (not imported), so
that a client that drifts from it is refused as the real platform would refuse it.

It checks the envelope (appid known, `sign` the upper-case MD5 of the sorted parameters and
the app's key, `data` base64 of a UTF-8 JSON object), each service's required parameters and
their types, the agency code registered with the appid, amounts of at most two decimals, that
chargeDetail, listDetail and payChannelDetail each sum to totalAmt and that accountPay +
fundPay + otherfundPay + ownPay is totalAmt. busNo is the idempotency key: the same busNo and
the same body answer the same bill, another body is refused (E1006). Only a valid bill is
written off (冲红; again: E1008). checkTotalData compares the hospital's figures of a day
(Beijing time) with its own. Bills live in its own database; `/_sandbox/ebills` lists them.

`python -m simulators.ebill PORT APP_ID APP_KEY AGENCY_CODE [DB_FILE]` serves it (no file:
in memory)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import struct
import sys
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import JSON, Integer, MetaData, String, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from simulators.store import Store, UtcDateTime, serve

BEIJING = timezone(timedelta(hours=8))
BATCH_CODE = "44060126"  # the simulated province's code of the outpatient bill kind
SCARLET_BATCH_CODE = "44060199"  # of its red bills
WIRE_TIME = "%Y%m%d%H%M%S"  # then three digits of milliseconds


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}  # noqa: RUF012 - SQLAlchemy reads it


class Bill(Base):
    __tablename__ = "ebill"
    __table_args__ = (UniqueConstraint("app_id", "bus_no"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(64))
    bus_no: Mapped[str] = mapped_column(String(64))
    body_hash: Mapped[str] = mapped_column(String(64))
    batch_code: Mapped[str] = mapped_column(String(20))
    bill_no: Mapped[str] = mapped_column(String(20), unique=True)
    random: Mapped[str] = mapped_column(String(10))
    total_fen: Mapped[int]
    created_at: Mapped[datetime]
    params: Mapped[dict[str, Any]]  # every parameter as received (amounts as strings)
    state: Mapped[str] = mapped_column(String(12))  # issued | written_off
    scarlet_bill_no: Mapped[str | None] = mapped_column(String(20))
    scarlet_random: Mapped[str | None] = mapped_column(String(10))
    written_off_at: Mapped[datetime | None]
    write_off_reason: Mapped[str | None] = mapped_column(String(200))


class Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def b64json(value: Any) -> str:
    def plain(v: Any) -> Any:  # an amount: a JSON number (its shortest form reads back exactly)
        if isinstance(v, Decimal):
            return float(v)
        raise TypeError(type(v))

    text = json.dumps(value, ensure_ascii=False, default=plain)
    return base64.b64encode(text.encode()).decode()


def answer(result: str, message: Any) -> dict[str, str]:
    return {"result": result, "message": b64json(message)}


def expected_sign(body: dict[str, str], key: str) -> str:
    text = "&".join(f"{name}={body[name]}" for name in ("appid", "data", "noise", "version")) + f"&key={key}"
    return hashlib.md5(text.encode()).hexdigest().upper()


def fen(value: Any, name: str) -> int:
    """Yuan with at most two decimals (a JSON number) to fen; else a refusal."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Refusal("E1004", f"{name} is not a number")
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value() or cents < 0:
        raise Refusal("E1005", f"{name} {value} is not an amount of yuan with two decimals")
    return int(cents)


def need(params: dict[str, Any], spec: dict[str, type | tuple[type, ...]]) -> None:
    for name, kind in spec.items():
        value = params.get(name)
        if value is None or value == "" or isinstance(value, bool) or not isinstance(value, kind):
            raise Refusal("E1004", f"{name} is missing or of the wrong type")


def check_outpatient(params: dict[str, Any]) -> int:
    """The bill's required parameters and its sums; its total in fen."""
    number = (int, Decimal)
    need(
        params,
        {
            "busNo": str,
            "busType": str,
            "payer": str,
            "busDateTime": str,
            "placeCode": str,
            "payee": str,
            "author": str,
            "totalAmt": number,
            "accountPay": number,
            "fundPay": number,
            "ownPay": number,
            "payChannelDetail": list,
            "chargeDetail": list,
        },
    )
    if len(params["busNo"]) > 50:
        raise Refusal("E1004", "busNo is longer than 50")
    if params["busType"] not in ("02",):
        raise Refusal("E1004", f"busType {params['busType']} is not the outpatient kind")
    parse_time(params["busDateTime"], "busDateTime")
    total = fen(params["totalAmt"], "totalAmt")
    if total <= 0:
        raise Refusal("E1005", "totalAmt must be positive")
    split = sum(fen(params.get(n, 0), n) for n in ("accountPay", "fundPay", "otherfundPay", "ownPay"))
    if split != total:
        raise Refusal("E1005", f"accountPay + fundPay + otherfundPay + ownPay is {split} fen, totalAmt {total}")
    for name, amount in (("chargeDetail", "amt"), ("listDetail", "amt"), ("payChannelDetail", "payChannelValue")):
        rows = params.get(name)
        if rows is None and name == "listDetail":
            continue
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Refusal("E1004", f"{name} must be a list of objects")
        required = ("payChannelCode",) if name == "payChannelDetail" else ("chargeCode", "chargeName")
        for row in rows:
            need(row, dict.fromkeys(required, str))
        summed = sum(fen(r.get(amount), f"{name}.{amount}") for r in rows)
        if summed != total:
            raise Refusal("E1005", f"{name} sums to {summed} fen, totalAmt is {total} fen")
    return total


def parse_time(text: str, name: str) -> datetime:
    if len(text) != 17 or not text.isdigit():
        raise Refusal("E1004", f"{name} is not yyyyMMddHHmmssSSS")
    try:
        at = datetime.strptime(text[:14], WIRE_TIME).replace(tzinfo=BEIJING)
    except ValueError as e:
        raise Refusal("E1004", f"{name} is not a time") from e
    return (at + timedelta(milliseconds=int(text[14:]))).astimezone(UTC)


def wire_time(at: datetime) -> str:
    local = at.astimezone(BEIJING)
    return local.strftime(WIRE_TIME) + f"{local.microsecond // 1000:03d}"


def body_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def fake_qr(bill_no: str) -> str:
    """A stand-in for the bill's QR code: a real PNG (21 x 21 modules, 4 px each, grey levels
    0/255) whose pattern comes from the bill number, base64. Not a scannable QR code."""
    bits = hashlib.sha256(f"EBILL:{bill_no}".encode()).digest() * 2
    size, scale = 21, 4
    rows = []
    for y in range(size * scale):
        row = bytearray([0])  # filter: none
        for x in range(size * scale):
            n = (y // scale) * size + x // scale
            row.append(0 if bits[n // 8 % len(bits)] >> (n % 8) & 1 else 255)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = size * scale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def day_window(bus_date: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(bus_date, "%Y%m%d").replace(tzinfo=BEIJING)
    except ValueError as e:
        raise Refusal("E1004", "busDate is not yyyyMMdd") from e
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def simulator_app(
    keys: dict[str, str],
    agencies: dict[str, str],
    store: Store | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The platform's side. `keys`: each appid's key; `agencies`: the agency code each appid is
    registered for. `store` None: a fresh one in memory (`app.state.store` either way). `clock`:
    the platform's time (a test pins it); the wall clock by default."""
    now = clock or (lambda: datetime.now(UTC))
    app = FastAPI(title="Fiscal e-bill platform (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    db = store or Store(Base.metadata)
    app.state.store = db
    base_url = "http://ebill.sandbox"

    def issue(app_id: str, params: dict[str, Any]) -> dict[str, Any]:
        total = check_outpatient(params)
        digest = body_hash(params)
        with db.transaction() as session:
            bill = session.scalar(select(Bill).where(Bill.app_id == app_id, Bill.bus_no == params["busNo"]))
            if bill is not None and bill.body_hash != digest:
                raise Refusal("E1006", f"busNo {params['busNo']} was used for another bill")
            if bill is None:
                count = len(session.scalars(select(Bill.id)).all())
                bill = Bill(
                    app_id=app_id,
                    bus_no=params["busNo"],
                    body_hash=digest,
                    batch_code=BATCH_CODE,
                    bill_no=f"{count + 1:010d}",
                    random=secrets.token_hex(3),
                    total_fen=total,
                    created_at=now(),
                    params=json.loads(json.dumps(params, default=str)),
                    state="issued",
                )
                session.add(bill)
                session.flush()
            return {
                "billBatchCode": bill.batch_code,
                "billNo": bill.bill_no,
                "random": bill.random,
                "createTime": wire_time(bill.created_at),
                "billQRCode": fake_qr(bill.bill_no),
                "pictureUrl": f"{base_url}/h5/{bill.batch_code}/{bill.bill_no}?random={bill.random}",
            }

    def find(session: Session, app_id: str, params: dict[str, Any]) -> Bill:
        need(params, {"billBatchCode": str, "billNo": str})
        bill = session.scalar(
            select(Bill).where(
                Bill.app_id == app_id, Bill.batch_code == params["billBatchCode"], Bill.bill_no == params["billNo"]
            )
        )
        if bill is None:
            raise Refusal("E1007", f"no bill {params['billBatchCode']} {params['billNo']}")
        return bill

    def write_off(app_id: str, params: dict[str, Any]) -> dict[str, Any]:
        need(params, {"reason": str, "operator": str, "busDateTime": str, "placeCode": str})
        parse_time(params["busDateTime"], "busDateTime")
        with db.transaction() as session:
            bill = find(session, app_id, params)
            if bill.state != "issued":
                raise Refusal("E1008", f"bill {bill.bill_no} is {bill.state}: only a valid bill is written off")
            count = len(session.scalars(select(Bill.id).where(Bill.scarlet_bill_no.is_not(None))).all())
            bill.state = "written_off"
            bill.scarlet_bill_no = f"9{count + 1:09d}"
            bill.scarlet_random = secrets.token_hex(3)
            bill.written_off_at = now()
            bill.write_off_reason = params["reason"]
            return {
                "eScarletBillBatchCode": SCARLET_BATCH_CODE,
                "eScarletBillNo": bill.scarlet_bill_no,
                "eScarletRandom": bill.scarlet_random,
                "createTime": wire_time(bill.written_off_at),
            }

    def states(app_id: str, params: dict[str, Any]) -> dict[str, Any]:
        with db.transaction() as session:
            bill = find(session, app_id, params)
            out = {"state": "1" if bill.state == "issued" else "2", "isScarlet": "0" if bill.state == "issued" else "1"}
            if bill.scarlet_bill_no:
                out |= {"scarletBillBatchCode": SCARLET_BATCH_CODE, "scarletBillNo": bill.scarlet_bill_no}
            if bill.written_off_at:
                out["scarletCreateTime"] = wire_time(bill.written_off_at)
            return out

    def check_totals(app_id: str, params: dict[str, Any]) -> dict[str, Any]:
        need(params, {"busDate": str, "copyNum": int, "totalAmt": (int, Decimal), "writeOffNum": int})
        need(params, {"writeOffAmt": (int, Decimal)})
        start, end = day_window(params["busDate"])
        theirs = (params["copyNum"], fen(params["totalAmt"], "totalAmt"))
        theirs_off = (params["writeOffNum"], fen(params["writeOffAmt"], "writeOffAmt"))
        with db.transaction() as session:
            issued = session.scalars(
                select(Bill).where(Bill.app_id == app_id, Bill.created_at >= start, Bill.created_at < end)
            ).all()
            off = session.scalars(
                select(Bill).where(Bill.app_id == app_id, Bill.written_off_at >= start, Bill.written_off_at < end)
            ).all()
        ours = (len(issued), sum(b.total_fen for b in issued))
        ours_off = (len(off), sum(b.total_fen for b in off))
        return {
            "checkResult": "1" if (ours, ours_off) == (theirs, theirs_off) else "0",
            "copyNum": ours[0],
            "totalAmt": Decimal(ours[1]) / 100,
            "writeOffNum": ours_off[0],
            "writeOffAmt": Decimal(ours_off[1]) / 100,
        }

    services = {
        "invoiceEBillOutpatient": issue,
        "writeOffEBill": write_off,
        "getEBillStatesByBillInfo": states,
        "checkTotalData": check_totals,
    }

    @app.post("/api/medical/{service}")
    async def call(service: str, request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return answer("E1003", {"errMsg": "the body is not JSON"})
        try:
            app_id, params = verified(body, keys, agencies)
            handler = services.get(service)
            if handler is None:
                raise Refusal("E1009", f"no service {service}")
            return answer("S0000", handler(app_id, params))
        except Refusal as r:
            return answer(r.code, {"errMsg": r.message})

    @app.get("/_sandbox/ebills")
    async def bills(visit_no: str | None = None, bus_no: str | None = None) -> Any:
        with db.transaction() as session:
            rows = session.scalars(select(Bill).order_by(Bill.id)).all()
            return [
                {
                    "bus_no": b.bus_no,
                    "bill_batch_code": b.batch_code,
                    "bill_no": b.bill_no,
                    "random": b.random,
                    "state": b.state,
                    "total_fen": b.total_fen,
                    "created_at": b.created_at.isoformat(),
                    "scarlet_bill_no": b.scarlet_bill_no,
                    "written_off_at": b.written_off_at.isoformat() if b.written_off_at else None,
                    "write_off_reason": b.write_off_reason,
                    "received": b.params,
                }
                for b in rows
                if (visit_no is None or b.params.get("visitNo") == visit_no) and (bus_no is None or b.bus_no == bus_no)
            ]

    return app


def verified(body: Any, keys: dict[str, str], agencies: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The envelope checked: the appid, its signature, the data's shape; the parameters."""
    if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in ("appid", "data", "noise", "sign")):
        raise Refusal("E1003", "appid, data, noise, version and sign are strings")
    if body.get("version") != "1.0":
        raise Refusal("E1003", "version must be 1.0")
    key = keys.get(body["appid"])
    if key is None:
        raise Refusal("E1002", f"appid {body['appid']} is not registered")
    if not hmac.compare_digest(expected_sign(body, key), body["sign"]):
        raise Refusal("E1001", "sign does not match")
    if not 16 <= len(body["noise"]) <= 64:
        raise Refusal("E1003", "noise must be 16 to 64 characters")
    try:
        params = json.loads(
            base64.b64decode(body["data"].encode("ascii"), validate=True).decode("utf-8"), parse_float=Decimal
        )
    except (binascii.Error, UnicodeError, ValueError, InvalidOperation) as e:
        raise Refusal("E1003", "data is not base64 of UTF-8 JSON") from e
    if not isinstance(params, dict):
        raise Refusal("E1003", "data is not a JSON object")
    agency = params.get("agencyCode")
    if agency != agencies.get(body["appid"]):
        raise Refusal("E1004", f"agencyCode {agency} is not this appid's")
    return body["appid"], params


if __name__ == "__main__":  # python -m simulators.ebill PORT APP_ID APP_KEY AGENCY_CODE [DB_FILE]
    port, app_id, key, agency = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    path = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    serve(simulator_app({app_id: key}, {app_id: agency}, Store(Base.metadata, path)), port)
