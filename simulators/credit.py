"""The local credit platform (征信平台), simulated: default reports and their corrections, and
the credit-score sources (bank score, Sesame score) that enrolment asks. It checks the
signature and the parameters, deduplicates by request id and records in its own database;
`/_sandbox/...` shows the records and sets what the score sources answer.

`python -m simulators.credit PORT APP_ID SECRET [DB_FILE]` serves it (no file: in memory)."""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from simulators.gateway import Verifier, parse_time, refused, verified_json
from simulators.store import Store, UtcDateTime, serve

KINDS = ("report", "correction")


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012 - SQLAlchemy reads it from the class


class Record(Base):
    __tablename__ = "credit_record"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(String(40), index=True)
    visit_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    amount_fen: Mapped[int]
    at: Mapped[datetime]


class Score(Base):
    __tablename__ = "credit_score"
    id_number_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    bank_score: Mapped[int | None]
    sesame_score: Mapped[int | None]
    updated_at: Mapped[datetime]


class ScoresIn(BaseModel):
    id_number: str
    bank_score: int | None
    sesame_score: int | None


def score_key(id_number: str) -> str:
    """How the simulated score sources file a person (they keep no plain ID numbers)."""
    return hashlib.sha256(id_number.strip().upper().encode()).hexdigest()


def simulator_app(secrets_by_app: dict[str, str], store: Store | None = None) -> FastAPI:
    """The platform's side; `store` None: a fresh one in memory (`app.state.store` either way)."""
    app = FastAPI(title="Credit platform (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    db = store or Store(Base.metadata)
    app.state.store = db
    verifier = Verifier(secrets_by_app)
    required = {"request_id": str, "patient_id": str, "visit_id": str, "amount_fen": int, "at": str}

    @app.post("/records/{kind}")
    async def record(kind: str, request: Request) -> Any:
        if kind not in KINDS:
            return refused(404, "UnknownKind", kind)
        data = await verified_json(request, verifier, required)
        if isinstance(data, JSONResponse):
            return data
        if data["amount_fen"] <= 0:
            return refused(400, "InvalidParameter", "amount_fen must be positive")
        at = parse_time(data["at"])
        if at is None:
            return refused(400, "InvalidParameter", "at is not a time")
        with db.transaction() as session:
            row = session.scalar(select(Record).where(Record.request_id == data["request_id"]))
            if row is None:
                if kind == "correction" and not session.scalar(
                    select(Record.id).where(Record.visit_id == data["visit_id"], Record.kind == "report")
                ):
                    return refused(409, "NoSuchReport", "nothing reported for this visit")
                row = Record(
                    request_id=data["request_id"],
                    patient_id=data["patient_id"],
                    visit_id=data["visit_id"],
                    kind=kind,
                    amount_fen=data["amount_fen"],
                    at=at,
                )
                session.add(row)
                session.flush()
            return {"code": "OK", "record_id": f"CR{row.id:08d}"}

    @app.post("/scores/query")
    async def scores(request: Request) -> Any:
        data = await verified_json(request, verifier, {"id_number": str})
        if isinstance(data, JSONResponse):
            return data
        with db.transaction() as session:
            row = session.get(Score, score_key(data["id_number"]))
            return {
                "code": "OK",
                "bank_score": row.bank_score if row else None,
                "sesame_score": row.sesame_score if row else None,
            }

    inspection(app, db)
    return app


def inspection(app: FastAPI, db: Store) -> None:
    """For the sandbox (/v1/sandbox/...) and the tests: the records, and the scores' knob."""

    @app.get("/_sandbox/records")
    async def records(patient_id: str | None = None, visit_id: str | None = None) -> Any:
        query = select(Record).order_by(Record.id)
        if patient_id is not None:
            query = query.where(Record.patient_id == patient_id)
        if visit_id is not None:
            query = query.where(Record.visit_id == visit_id)
        with db.transaction() as session:
            return [
                {"kind": r.kind, "visit_id": r.visit_id, "amount_fen": r.amount_fen, "at": r.at.isoformat()}
                for r in session.scalars(query).all()
            ]

    @app.put("/_sandbox/scores")
    async def set_scores(body: ScoresIn) -> Any:
        key = score_key(body.id_number)
        with db.transaction() as session:
            row = session.get(Score, key)
            if row is None:
                row = Score(id_number_hash=key, updated_at=datetime.now(UTC))
                session.add(row)
            row.bank_score, row.sesame_score, row.updated_at = body.bank_score, body.sesame_score, datetime.now(UTC)
        return {"bank_score": body.bank_score, "sesame_score": body.sesame_score}


if __name__ == "__main__":  # python -m simulators.credit PORT APP_ID SECRET [DB_FILE]
    port, app_id, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    serve(simulator_app({app_id: secret}, Store(Base.metadata, path)), port)
