"""The SMS outbox: our record of every text, one `sms_message` row per idempotency key, so a
retried send never texts a patient twice. `OutboxSender` is the `SmsSender` the API and the
activities call. With a gateway's delivery client (Aliyun Dysms) the row is written first
(`sending`), then the message handed over, then the row marked `sent` or `failed`; without
one (the sandbox) the row is the delivery, and `GET /v1/sandbox/sms` reads it. A delivered
row keeps the gateway's id of the message (`provider_message_id`, Aliyun's BizId) and when it
accepted it (`accepted_at`); a row left `sending` by a try whose answer was lost is looked up at
the gateway (by our `OutId`) before it is handed over again: found delivered or waiting for its
receipt, it is `sent`; found failed by the carrier, `failed` (SmsRejected), as a refused one."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SmsMessage
from db.pii import Pii, mask_phone
from integrations.sms import Delivered, OutgoingSms, SendResult, SmsDelivery, SmsRejected, check_params, render

BEIJING = ZoneInfo("Asia/Shanghai")  # the SMS gateway's calendar


class OutboxSender:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], pii: Pii, delivery: SmsDelivery | None = None
    ) -> None:
        self._factory = factory
        self._pii = pii
        self._delivery = delivery

    async def send(self, message: OutgoingSms) -> SendResult:
        check_params(message)
        if self._delivery is None:
            row_id, _, created = await self._row(message, "sent")
            return SendResult(message_id=row_id, duplicate=not created)
        row_id, status, created = await self._row(message, "sending")
        if status == "sent":
            return SendResult(message_id=row_id, duplicate=True, provider_message_id=await self._provider_id(row_id))
        if status == "failed":
            raise SmsRejected("already_rejected", "the gateway refused this message before")
        if not created:  # an earlier try may have been accepted, its answer lost: ask before texting again
            try:
                found = await self._delivery.find(message, out_id=str(row_id), days=await self._days(row_id))
            except SmsRejected:  # it went, and the carrier failed it: not sent, never notice evidence
                await self._mark(row_id, "failed")
                raise
            if found is not None:
                await self._mark(row_id, "sent", found)
                return SendResult(message_id=row_id, duplicate=True)
        try:
            delivered = await self._delivery.deliver(message, out_id=str(row_id))
        except SmsRejected:
            await self._mark(row_id, "failed")
            raise
        await self._mark(row_id, "sent", delivered)
        return SendResult(message_id=row_id, duplicate=False, provider_message_id=delivered.provider_message_id)

    async def _row(self, message: OutgoingSms, status: str) -> tuple[int, str, bool]:
        """(id, status, created) of the message's row, written with `status` if it is new."""
        row = SmsMessage(
            idempotency_key=message.idempotency_key,
            phone_hash=self._pii.lookup("phone", message.phone),
            phone_masked=mask_phone(message.phone),
            template=message.template,
            params=message.params,
            text=render(message.template, message.params),
            patient_id=message.patient_id,
            visit_id=message.visit_id,
            status=status,
            created_at=message.at or datetime.now(UTC),
        )
        try:
            async with self._factory() as session, session.begin():
                existing = await _by_key(session, message.idempotency_key)
                if existing is not None:
                    return existing.id, existing.status, False
                session.add(row)
        except IntegrityError:  # a concurrent retry won the race
            async with self._factory() as session:
                existing = await _by_key(session, message.idempotency_key)
                assert existing is not None
                return existing.id, existing.status, False
        return row.id, status, True

    async def _mark(self, row_id: int, status: str, delivered: Delivered | None = None) -> None:
        """The row's outcome; delivered, the gateway's id of the message and when it accepted it."""
        async with self._factory() as session, session.begin():
            row = await session.get(SmsMessage, row_id)
            assert row is not None
            row.status = status
            if delivered is not None:
                row.provider_message_id = delivered.provider_message_id
                row.accepted_at = delivered.accepted_at

    async def _provider_id(self, row_id: int) -> str | None:
        async with self._factory() as session:
            return await session.scalar(select(SmsMessage.provider_message_id).where(SmsMessage.id == row_id))

    async def _days(self, row_id: int) -> list[date]:
        """The gateway's days (Beijing) the message may have gone out: its row's, and today."""
        async with self._factory() as session:
            created = await session.scalar(select(SmsMessage.created_at).where(SmsMessage.id == row_id))
        assert created is not None
        days = [created.astimezone(BEIJING).date(), datetime.now(BEIJING).date()]
        return sorted(set(days))


async def _by_key(session: AsyncSession, key: str) -> SmsMessage | None:
    return await session.scalar(select(SmsMessage).where(SmsMessage.idempotency_key == key))
