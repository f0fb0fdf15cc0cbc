"""The medical-insurance bureau, simulated: the card service (lock, unlock) and card-less
settlement (医保脱卡支付: pre-settle, settle, 冲正). It checks the signature and the
parameters as the real gateway does, deduplicates by request id and records every lock,
unlock and settlement in its own database; `/_sandbox/...` shows what it recorded.

`python -m simulators.bureau PORT APP_ID SECRET [DB_FILE]` serves it (no file: in memory)."""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from simulators.gateway import Verifier, parse_time, refused, verified_json
from simulators.store import Store, UtcDateTime, serve

ACTIONS = ("lock", "unlock")

# The simulated bureau's rules: these categories are covered; the pooled fund pays 60% of
# them, the personal account what it can of the rest, the patient everything else.
COVERED = frozenset({"exam", "lab", "drug", "infusion", "treatment", "material"})
POOLED_PERCENT = 60
PERSONAL_ACCOUNT_FEN = 20_000  # every simulated insured person starts with 200 yuan


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012 - SQLAlchemy reads it from the class


class CardEvent(Base):
    __tablename__ = "card_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class Settlement(Base):
    __tablename__ = "settlement"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the presettle id
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    total_fen: Mapped[int]
    pooled_fen: Mapped[int]
    personal_fen: Mapped[int]
    self_pay_fen: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # presettled | settled | reversed
    settlement_no: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def split_bill(items: list[tuple[str, int]], personal_balance_fen: int) -> tuple[int, int, int]:
    """(pooled, personal, self-pay) of (category, fen) items, by the simulated rules."""
    total = sum(fen for _, fen in items)
    covered = sum(fen for category, fen in items if category in COVERED)
    pooled = covered * POOLED_PERCENT // 100
    personal = max(0, min(covered - pooled, personal_balance_fen))
    return pooled, personal, total - pooled - personal


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
    return PERSONAL_ACCOUNT_FEN - sum(spent)


def settlement_out(row: Settlement) -> dict[str, Any]:
    return {
        "presettle_id": row.id,
        "status": row.status,
        "total_fen": row.total_fen,
        "pooled_fen": row.pooled_fen,
        "personal_fen": row.personal_fen,
        "self_pay_fen": row.self_pay_fen,
        "settlement_no": row.settlement_no,
    }


def parse_items(raw: list[Any]) -> list[tuple[str, int]] | None:
    items = []
    for it in raw:
        fen = it.get("amount_fen") if isinstance(it, dict) else None
        if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0 or not isinstance(it.get("category"), str):
            return None
        items.append((it["category"], fen))
    return items


def simulator_app(secrets_by_app: dict[str, str], store: Store | None = None) -> FastAPI:
    """The bureau's side; `store` None: a fresh one in memory (`app.state.store` either way)."""
    app = FastAPI(title="Insurance bureau (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    db = store or Store(Base.metadata)
    app.state.store = db
    verifier = Verifier(secrets_by_app)

    @app.post("/cards/{action}")
    async def card(action: str, request: Request) -> Any:
        if action not in ACTIONS:
            return refused(404, "UnknownAction", action)
        data = await verified_json(request, verifier, {"request_id": str, "patient_id": str, "reason": str, "at": str})
        if isinstance(data, JSONResponse):
            return data
        at = parse_time(data["at"])
        if at is None:
            return refused(400, "InvalidParameter", "at is not a time")
        with db.transaction() as session:
            if session.scalar(select(CardEvent).where(CardEvent.request_id == data["request_id"])) is None:
                session.add(
                    CardEvent(
                        request_id=data["request_id"],
                        patient_id=data["patient_id"],
                        action=action,
                        reason=data["reason"][:200],
                        at=at,
                    )
                )
                session.flush()
            locked = is_locked(card_events(session, data["patient_id"]))
        return {"code": "OK", "request_id": data["request_id"], "locked": locked}

    @app.post("/settlements/presettle")
    async def presettle(request: Request) -> Any:
        data = await verified_json(request, verifier, {"request_id": str, "patient_id": str, "items": list})
        if isinstance(data, JSONResponse):
            return data
        items = parse_items(data["items"])
        if items is None:
            return refused(400, "InvalidParameter", "items need a category and a non-negative amount_fen")
        if not items or sum(f for _, f in items) <= 0:
            return refused(400, "InvalidParameter", "nothing to settle")
        now = datetime.now(UTC)
        with db.transaction() as session:
            if is_locked(card_events(session, data["patient_id"])):
                return refused(403, "CardLocked", "参保人医保卡已锁定，不能结算")
            row = session.scalar(select(Settlement).where(Settlement.request_id == data["request_id"]))
            if row is None:
                pooled, personal, self_pay = split_bill(items, personal_balance(session, data["patient_id"]))
                row = Settlement(
                    id="PS" + secrets.token_hex(10).upper(),
                    request_id=data["request_id"],
                    patient_id=data["patient_id"],
                    total_fen=sum(f for _, f in items),
                    pooled_fen=pooled,
                    personal_fen=personal,
                    self_pay_fen=self_pay,
                    status="presettled",
                    settlement_no=None,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            out = settlement_out(row)
        return {"code": "OK", **{k: v for k, v in out.items() if k not in ("status", "settlement_no")}}

    @app.post("/settlements/{action}")
    async def settle_or_reverse(action: str, request: Request) -> Any:
        if action not in ("settle", "reverse"):
            return refused(404, "UnknownAction", action)
        data = await verified_json(request, verifier, {"request_id": str, "presettle_id": str})
        if isinstance(data, JSONResponse):
            return data
        with db.transaction() as session:
            row = session.get(Settlement, data["presettle_id"])
            if row is None:
                return refused(404, "PresettleNotFound", "预结算不存在")
            if action == "settle":
                if row.status == "reversed":
                    return refused(409, "AlreadyReversed", "该结算已冲正")
                if row.status == "presettled":
                    if row.personal_fen > personal_balance(session, row.patient_id):
                        return refused(409, "BalanceChanged", "个人账户余额不足，请重新预结算")
                    row.status, row.settlement_no = "settled", "JS" + secrets.token_hex(10).upper()
            else:
                row.status = "reversed"  # 冲正 is final and may be asked again
            row.updated_at = datetime.now(UTC)
            return {"code": "OK", "presettle_id": row.id, "status": row.status, "settlement_no": row.settlement_no}

    inspection(app, db)
    return app


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
                select(Settlement).where(Settlement.patient_id == patient_id).order_by(Settlement.created_at)
            ).all()
            return [settlement_out(r) for r in rows]


if __name__ == "__main__":  # python -m simulators.bureau PORT APP_ID SECRET [DB_FILE]
    port, app_id, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    serve(simulator_app({app_id: secret}, Store(Base.metadata, path)), port)
