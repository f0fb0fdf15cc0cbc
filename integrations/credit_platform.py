"""The local credit platform (征信平台): default reports and their corrections, the deletion of
expired negative records, the answers to objections (异议), and the credit-score sources (bank
score, Sesame score) that enrolment asks.

A report carries the debt only (征信业管理条例 §14: no illness or medical history): who owes
(name and ID number), to whom (the creditor), how much, the dates and the status. `FIELDS` is
every field a report may carry; nothing names an item, a category, a department, a doctor or
a diagnosis. A negative report carries the evidence of the notice given before it (§15).

`CreditPlatformClient` sends signed JSON (the sandbox's platform is simulators/credit.py,
reached over HTTP like the real one); `CallbackVerifier` checks the platform's signed calls to
us (an objection) with the same signature."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import httpx

from integrations.gateway import SignedJsonClient
from integrations.signing import sign

KINDS = ("report", "correction")
MAX_SKEW_SECONDS = 300


class RecordStatus(StrEnum):
    """A record's status as the platform shows it."""

    reported = "reported"  # unpaid past the deadline: a default
    corrected_paid = "corrected_paid"  # the debt was paid
    corrected_waived = "corrected_waived"  # the hospital gave up (part of) the debt: waiver, write-off
    corrected_withdrawn = "corrected_withdrawn"  # the report should not have been made (a hold, a dispute)


class ObjectionAnswer(StrEnum):
    corrected = "corrected"  # the objection was upheld: the record is corrected
    confirmed = "confirmed"  # the objection was rejected: the record stands


# who opened the dispute an objection brings (Dispute.opened_by): the platform; on a visit whose
# workflow has closed, the dispute is kept outside it (no sanctions to hold), decided by an
# operator in the API, and an upheld one deletes the visit's records at the platform
OBJECTION_OPENER = "credit_platform"
OBJECTION_OPENER_VISIT_CLOSED = "credit_platform:visit_closed"


# Every field a report or a correction may carry; the platform refuses any other.
FIELDS = frozenset(
    {
        "request_id",  # our idempotency key
        "customer_ref",  # our opaque id of the person (no meaning outside the hospital)
        "account_no",  # our opaque id of the debt (the visit's id)
        "subject_name",
        "subject_id_type",  # id_card
        "subject_id_number",  # absent when the hospital holds none
        "creditor_code",
        "creditor_name",
        "amount_owed_fen",
        "visit_date",  # the day the debt arose (YYYY-MM-DD)
        "due_date",  # the deadline to pay (YYYY-MM-DD)
        "reported_at",  # when we report (RFC 3339)
        "status",  # RecordStatus
        "notice_sent_at",  # §15: the notice before a negative report
        "notice_channel",
        "notice_message_id",
        "notice_message_id_kind",  # whose id it is: MessageIdKind
        "notice_template",
    }
)


class MessageIdKind(StrEnum):
    """Whose id a notice's `message_id` is."""

    provider = "provider"  # the SMS provider's receipt (Aliyun's BizId)
    outbox = "outbox"  # our outbox row's: the transport gave none (the log transport in dev)
    inbox = "inbox"  # the app inbox's message (no phone on record: no text went)


@dataclass(frozen=True, kw_only=True)
class Notice:
    """The evidence of the notice given before a negative report (§15)."""

    sent_at: datetime
    channel: str  # sms | app
    message_id: str
    message_id_kind: MessageIdKind
    template: str


@dataclass(frozen=True, kw_only=True)
class CreditRecord:
    """One report or correction, as it goes out."""

    kind: str  # report | correction
    request_id: str
    customer_ref: str
    account_no: str
    subject_name: str
    subject_id_number: str | None
    creditor_code: str
    creditor_name: str
    amount_owed_fen: int
    visit_date: date
    due_date: date | None
    reported_at: datetime
    status: RecordStatus
    notice: Notice | None = None

    def payload(self) -> dict[str, Any]:
        """The wire form: only names from `FIELDS`."""
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "customer_ref": self.customer_ref,
            "account_no": self.account_no,
            "subject_name": self.subject_name,
            "subject_id_type": "id_card",
            "creditor_code": self.creditor_code,
            "creditor_name": self.creditor_name,
            "amount_owed_fen": self.amount_owed_fen,
            "visit_date": self.visit_date.isoformat(),
            "reported_at": self.reported_at.isoformat(),
            "status": str(self.status),
        }
        if self.subject_id_number:
            data["subject_id_number"] = self.subject_id_number
        if self.due_date is not None:
            data["due_date"] = self.due_date.isoformat()
        if self.notice is not None:
            data["notice_sent_at"] = self.notice.sent_at.isoformat()
            data["notice_channel"] = self.notice.channel
            data["notice_message_id"] = self.notice.message_id
            data["notice_message_id_kind"] = str(self.notice.message_id_kind)
            data["notice_template"] = self.notice.template
        assert set(data) <= FIELDS, set(data) - FIELDS
        return data


class CreditPlatformClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self.http = http
        self.app_id = app_id
        self._client = SignedJsonClient(http, app_id=app_id, secret=secret)

    async def submit(self, record: CreditRecord) -> str:
        """Report or correct; the platform's record id. A retry with the same request id is answered once."""
        if record.kind not in KINDS:
            raise ValueError(record.kind)
        data = await self._client.post(f"/records/{record.kind}", record.payload())
        return str(data["record_id"])

    async def delete(self, *, request_id: str, record_id: str, reason: str, at: datetime) -> None:
        """Ask the platform to delete a record (a negative record past its retention)."""
        await self._client.post(
            "/records/delete",
            {"request_id": request_id, "record_id": record_id, "reason": reason, "requested_at": at.isoformat()},
        )

    async def answer_objection(
        self, *, request_id: str, objection_id: str, answer: ObjectionAnswer, record_id: str | None, at: datetime
    ) -> None:
        """Tell the platform how an objection ended: the record corrected, or confirmed."""
        body: dict[str, Any] = {
            "request_id": request_id,
            "objection_id": objection_id,
            "answer": str(answer),
            "answered_at": at.isoformat(),
        }
        if record_id:
            body["correction_record_id"] = record_id
        await self._client.post("/objections/answer", body)

    async def scores(self, *, id_number: str) -> tuple[int | None, int | None]:
        data = await self._client.post("/scores/query", {"id_number": id_number})
        return data.get("bank_score"), data.get("sesame_score")


class CallbackRejected(Exception):
    """A call from the platform that does not verify; `status` 401 (unsigned, stale, forged) or 403 (another app)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CallbackVerifier:
    """The platform's calls to us are signed like ours to it: HMAC-SHA256 over method, path,
    timestamp, nonce and the body's digest, keyed by the secret issued with our app id. A
    replayed call is harmless: each is idempotent by its own id."""

    def __init__(self, *, app_id: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._app_id = app_id
        self._secret = secret
        self._clock = clock

    def verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        app_id, timestamp = lower.get("x-app-id", ""), lower.get("x-timestamp", "")
        nonce, signature = lower.get("x-nonce", ""), lower.get("x-signature", "")
        if not (app_id and timestamp and nonce and signature):
            raise CallbackRejected(
                401, "signature_missing", "X-App-Id, X-Timestamp, X-Nonce and X-Signature are required"
            )
        if not hmac.compare_digest(app_id.encode(), self._app_id.encode()):
            raise CallbackRejected(403, "unknown_app", f"app id {app_id} is not this hospital's")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > MAX_SKEW_SECONDS:
            raise CallbackRejected(401, "request_stale", "the timestamp is more than 5 minutes off")
        expected = sign(self._secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise CallbackRejected(401, "invalid_signature", "the signature does not match the request")
