"""The local credit platform (征信平台), simulated: default reports and their corrections, the
deletion of expired records, objections (异议) and their answers, and the credit-score sources
(bank score, Sesame score) that enrolment asks.

It checks what the real side checks: the signature; that a report carries only the fields a
credit record may hold (征信业管理条例 §14: identity, creditor, amount, dates, status; any other
field is refused with `FieldNotAllowed`); that a negative report carries the evidence of the
notice given before it, a full notice period before (§15: `NoticeMissing`, `NoticeTooLate`).
It deduplicates by request id and records every accepted body in its own database;
`/_sandbox/...` shows them, raises an objection (a signed call to the hospital) and sets what
the score sources answer.

`python -m simulators.credit PORT APP_ID SECRET [DB_FILE]` serves it (no file: in memory); the
hospital's API is called back at `$CREDIT_CALLBACK_URL` (else `$YHF_PUBLIC_BASE_URL`, else
http://127.0.0.1:8000); the notice period is `$CREDIT_NOTICE_PERIOD_SECONDS`, else the sandbox
hospital's `$YHF_PRE_DEFAULT_NOTICE` (the period the two sides agreed), else a day."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import JSON, Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from simulators.gateway import Verifier, expected_signature, parse_time, refused, verified_json
from simulators.store import Store, UtcDateTime, serve

KINDS = ("report", "correction")
# what a credit record may hold (§14); the platform's own list, not the client's
ALLOWED = frozenset(
    {
        "request_id",
        "customer_ref",
        "account_no",
        "subject_name",
        "subject_id_type",
        "subject_id_number",
        "creditor_code",
        "creditor_name",
        "amount_owed_fen",
        "visit_date",
        "due_date",
        "reported_at",
        "status",
        "notice_sent_at",
        "notice_channel",
        "notice_message_id",
        "notice_message_id_kind",
        "notice_template",
    }
)
REQUIRED: dict[str, type] = {
    "request_id": str,
    "customer_ref": str,
    "account_no": str,
    "subject_name": str,
    "subject_id_type": str,
    "creditor_code": str,
    "creditor_name": str,
    "amount_owed_fen": int,
    "visit_date": str,
    "reported_at": str,
    "status": str,
}
NOTICE = ("notice_sent_at", "notice_channel", "notice_message_id", "notice_message_id_kind", "notice_template")
STATUSES = {
    "report": {"reported"},
    "correction": {"corrected_paid", "corrected_waived", "corrected_withdrawn"},
}
NOTICE_CHANNELS = {"sms", "app"}  # a text, or (no phone on record) the app's inbox
# whose id the notice's message id is, a channel's: the SMS provider's receipt or, without one,
# the sender's own record; the app inbox's message
MESSAGE_ID_KINDS = {"sms": {"provider", "outbox"}, "app": {"inbox"}}
ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
DEFAULT_NOTICE_PERIOD = timedelta(days=1)


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}  # noqa: RUF012 - SQLAlchemy reads it


class Record(Base):
    __tablename__ = "credit_entry"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    record_id: Mapped[str] = mapped_column(String(20), unique=True)  # the platform's, given on receipt
    app_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(40), index=True)  # the creditor's customer_ref
    visit_id: Mapped[str] = mapped_column(String(64), index=True)  # the creditor's account_no
    kind: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(24))
    amount_fen: Mapped[int]
    at: Mapped[datetime]
    body: Mapped[dict[str, Any]]  # every field as received
    deleted_at: Mapped[datetime | None]
    deleted_request_id: Mapped[str | None] = mapped_column(String(200), unique=True)


class Objection(Base):
    __tablename__ = "credit_objection"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(20))
    app_id: Mapped[str] = mapped_column(String(64))
    account_no: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    raised_at: Mapped[datetime]
    answer: Mapped[str | None] = mapped_column(String(16))
    answered_at: Mapped[datetime | None]
    correction_record_id: Mapped[str | None] = mapped_column(String(20))


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


class ObjectionIn(BaseModel):
    record_id: str | None = None  # the record objected to; or the account's latest report
    account_no: str | None = None
    reason: str = "the person says the debt is not theirs"
    objection_id: str | None = None  # a known objection: call the hospital again (a retry)


def score_key(id_number: str) -> str:
    """How the simulated score sources file a person (they keep no plain ID numbers)."""
    return hashlib.sha256(id_number.strip().upper().encode()).hexdigest()


def new_record_id() -> str:
    return "CR" + secrets.token_hex(6).upper()


def corrected(session: Session, objection: Objection, data: dict[str, Any]) -> bool:
    """An objection answered `corrected`: the record objected to deleted, or the correction
    named (`correction_record_id`) one of the same account's corrections."""
    record = session.scalar(select(Record).where(Record.record_id == objection.record_id))
    if record is not None and record.deleted_at is not None:
        return True
    named = data.get("correction_record_id")
    correction = session.scalar(select(Record).where(Record.record_id == named)) if named else None
    return correction is not None and correction.kind == "correction" and correction.visit_id == objection.account_no


def check_report(kind: str, data: dict[str, Any], notice_period: timedelta) -> JSONResponse | datetime:
    """What a credit record may hold and, for a negative report, its notice; the report time."""
    extra = sorted(set(data) - ALLOWED)
    if extra:
        return refused(400, "FieldNotAllowed", f"a credit record may not carry {', '.join(extra)}")
    if data["amount_owed_fen"] <= 0:
        return refused(400, "InvalidParameter", "amount_owed_fen must be positive")
    if data["status"] not in STATUSES[kind]:
        return refused(400, "InvalidParameter", f"status {data['status']} is not a {kind}'s")
    if data["subject_id_type"] != "id_card":
        return refused(400, "InvalidParameter", "subject_id_type must be id_card")
    number = data.get("subject_id_number")
    if number is not None and not (isinstance(number, str) and ID_NUMBER.match(number)):
        return refused(400, "InvalidParameter", "subject_id_number is not an ID number")
    for name in ("visit_date", "due_date"):
        if name in data:
            try:
                date.fromisoformat(str(data[name]))
            except ValueError:
                return refused(400, "InvalidParameter", f"{name} is not a date")
    at = parse_time(data["reported_at"])
    if at is None:
        return refused(400, "InvalidParameter", "reported_at is not a time")
    if kind == "report":
        missing = [name for name in NOTICE if not isinstance(data.get(name), str) or not data[name]]
        if missing:
            return refused(400, "NoticeMissing", f"a negative report needs the notice's {', '.join(missing)}")
        if data["notice_channel"] not in NOTICE_CHANNELS:
            return refused(400, "InvalidParameter", f"notice_channel {data['notice_channel']} is not known")
        if data["notice_message_id_kind"] not in MESSAGE_ID_KINDS[data["notice_channel"]]:
            return refused(
                400, "InvalidParameter", f"notice_message_id_kind {data['notice_message_id_kind']} is not a channel's"
            )
        sent = parse_time(data["notice_sent_at"])
        if sent is None:
            return refused(400, "InvalidParameter", "notice_sent_at is not a time")
        if at - sent < notice_period:
            return refused(
                400, "NoticeTooLate", f"the notice was sent {at - sent} before the report; {notice_period} is required"
            )
    return at


def simulator_app(
    secrets_by_app: dict[str, str],
    store: Store | None = None,
    *,
    notice_period: timedelta = DEFAULT_NOTICE_PERIOD,
    callback: httpx.AsyncClient | None = None,
    callback_url: str = "http://127.0.0.1:8000",
) -> FastAPI:
    """The platform's side; `store` None: a fresh one in memory (`app.state.store` either way).
    `callback`: how the hospital's API is reached (tests: over ASGI), else at `callback_url`."""
    app = FastAPI(title="Credit platform (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    db = store or Store(Base.metadata)
    app.state.store = db
    app.state.callback = callback  # settable after the hospital's app exists
    verifier = Verifier(secrets_by_app)

    @app.post("/records/delete")
    async def delete(request: Request) -> Any:
        required = {"request_id": str, "record_id": str, "reason": str, "requested_at": str}
        data = await verified_json(request, verifier, required)
        if isinstance(data, JSONResponse):
            return data
        with db.transaction() as session:
            row = session.scalar(select(Record).where(Record.record_id == data["record_id"]))
            if row is None:
                return refused(404, "NoSuchRecord", data["record_id"])
            if row.deleted_at is None:
                row.deleted_at = parse_time(data["requested_at"]) or datetime.now(UTC)
                row.deleted_request_id = data["request_id"]
            return {"code": "OK", "record_id": row.record_id, "deleted_at": row.deleted_at.isoformat()}

    @app.post("/records/{kind}")
    async def record(kind: str, request: Request) -> Any:
        if kind not in KINDS:
            return refused(404, "UnknownKind", kind)
        data = await verified_json(request, verifier, REQUIRED)
        if isinstance(data, JSONResponse):
            return data
        at = check_report(kind, data, notice_period)
        if isinstance(at, JSONResponse):
            return at
        with db.transaction() as session:
            row = session.scalar(select(Record).where(Record.request_id == data["request_id"]))
            if row is None:
                if kind == "correction" and not session.scalar(
                    select(Record.id).where(Record.visit_id == data["account_no"], Record.kind == "report")
                ):
                    return refused(409, "NoSuchReport", "nothing reported for this account")
                row = Record(
                    request_id=data["request_id"],
                    record_id=new_record_id(),
                    app_id=request.headers.get("x-app-id", ""),
                    patient_id=data["customer_ref"],
                    visit_id=data["account_no"],
                    kind=kind,
                    status=data["status"],
                    amount_fen=data["amount_owed_fen"],
                    at=at,
                    body=data,
                    deleted_at=None,
                )
                session.add(row)
                session.flush()
            return {"code": "OK", "record_id": row.record_id}

    @app.post("/objections/answer")
    async def answer(request: Request) -> Any:
        required = {"request_id": str, "objection_id": str, "answer": str, "answered_at": str}
        data = await verified_json(request, verifier, required)
        if isinstance(data, JSONResponse):
            return data
        if data["answer"] not in ("corrected", "confirmed"):
            return refused(400, "InvalidParameter", "answer must be corrected or confirmed")
        with db.transaction() as session:
            row = session.get(Objection, data["objection_id"])
            if row is None:
                return refused(404, "NoSuchObjection", data["objection_id"])
            if row.answer is None and data["answer"] == "corrected" and not corrected(session, row, data):
                return refused(
                    409,
                    "NotCorrected",
                    "the record objected to is neither deleted nor corrected by the correction named",
                )
            if row.answer is None:
                row.answer = data["answer"]
                row.answered_at = parse_time(data["answered_at"]) or datetime.now(UTC)
                row.correction_record_id = data.get("correction_record_id")
            elif row.answer != data["answer"]:
                return refused(409, "AlreadyAnswered", f"answered {row.answer} already")
            return {"code": "OK"}

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

    inspection(app, db, secrets_by_app, callback_url)
    return app


def inspection(app: FastAPI, db: Store, secrets_by_app: dict[str, str], callback_url: str) -> None:
    """For the sandbox (/v1/sandbox/...) and the tests: the records as received, objections
    raised (the signed call to the hospital), and the scores' knob."""

    @app.get("/_sandbox/records")
    async def records(patient_id: str | None = None, visit_id: str | None = None) -> Any:
        query = select(Record).order_by(Record.id)
        if patient_id is not None:
            query = query.where(Record.patient_id == patient_id)
        if visit_id is not None:
            query = query.where(Record.visit_id == visit_id)
        with db.transaction() as session:
            return [
                {
                    "record_id": r.record_id,
                    "kind": r.kind,
                    "status": r.status,
                    "visit_id": r.visit_id,
                    "amount_fen": r.amount_fen,
                    "at": r.at.isoformat(),
                    "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
                    "received": r.body,
                }
                for r in session.scalars(query).all()
            ]

    @app.post("/_sandbox/objections")
    async def raise_objection(body: ObjectionIn) -> Any:
        """A person objects to a record: the platform tells the creditor (a signed call)."""
        with db.transaction() as session:
            row = session.get(Objection, body.objection_id) if body.objection_id else None
            if row is None:
                record = None
                if body.record_id:
                    record = session.scalar(select(Record).where(Record.record_id == body.record_id))
                if record is None and body.account_no:
                    record = session.scalars(
                        select(Record)
                        .where(Record.visit_id == body.account_no, Record.kind == "report")
                        .order_by(Record.id.desc())
                    ).first()
                if record is None:
                    return refused(404, "NoSuchRecord", body.record_id or body.account_no or "")
                row = Objection(
                    id=body.objection_id or f"OBJ{secrets.token_hex(6).upper()}",
                    record_id=record.record_id,
                    app_id=record.app_id,
                    account_no=record.visit_id,
                    reason=body.reason,
                    raised_at=datetime.now(UTC),
                )
                session.add(row)
            payload = {
                "objection_id": row.id,
                "record_id": row.record_id,
                "account_no": row.account_no,
                "reason": row.reason,
                "raised_at": row.raised_at.isoformat(),
            }
            app_id = row.app_id
        status, answer = await call_hospital(app, secrets_by_app, app_id, callback_url, payload)
        return {"objection_id": payload["objection_id"], "callback_status": status, "callback_answer": answer}

    @app.get("/_sandbox/objections")
    async def objections() -> Any:
        with db.transaction() as session:
            return [
                {
                    "objection_id": o.id,
                    "record_id": o.record_id,
                    "account_no": o.account_no,
                    "answer": o.answer,
                    "answered_at": o.answered_at.isoformat() if o.answered_at else None,
                    "correction_record_id": o.correction_record_id,
                }
                for o in session.scalars(select(Objection).order_by(Objection.raised_at)).all()
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


async def call_hospital(
    app: FastAPI, secrets_by_app: dict[str, str], app_id: str, callback_url: str, payload: dict[str, Any]
) -> tuple[int, Any]:
    """POST the objection to the hospital, signed with the secret issued with its app id."""
    path = "/v1/credit/objections"
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    headers = {
        "X-App-Id": app_id,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": expected_signature(secrets_by_app[app_id], "POST", path, timestamp, nonce, body),
        "Content-Type": "application/json",
    }
    client: httpx.AsyncClient | None = app.state.callback
    if client is not None:
        response = await client.post(path, content=body, headers=headers)
    else:
        async with httpx.AsyncClient(base_url=callback_url, timeout=20) as http:
            response = await http.post(path, content=body, headers=headers)
    try:
        answer = response.json()
    except ValueError:
        answer = response.text
    return response.status_code, answer


if __name__ == "__main__":  # python -m simulators.credit PORT APP_ID SECRET [DB_FILE]
    port, app_id, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    path = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    if os.environ.get("CREDIT_NOTICE_PERIOD_SECONDS"):
        period = timedelta(seconds=float(os.environ["CREDIT_NOTICE_PERIOD_SECONDS"]))
    elif os.environ.get("YHF_PRE_DEFAULT_NOTICE"):
        from config import parse_duration

        period = parse_duration(os.environ["YHF_PRE_DEFAULT_NOTICE"])
    else:
        period = DEFAULT_NOTICE_PERIOD
    base = os.environ.get("CREDIT_CALLBACK_URL") or os.environ.get("YHF_PUBLIC_BASE_URL") or "http://127.0.0.1:8000"
    serve(
        simulator_app(
            {app_id: secret},
            Store(Base.metadata, path),
            notice_period=period,
            callback_url=base,
        ),
        port,
    )
