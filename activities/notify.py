"""Texts to patients. The workflow names a patient and a template; the phone number is
looked up and decrypted here, so it never enters a workflow history."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import Patient
from db.pii import Pii
from integrations.sms import TEMPLATES, OutgoingSms, SmsRejected, SmsSender
from workflows import contracts as c


class NotifyActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], sender: SmsSender, pii: Pii) -> None:
        self._factory = factory
        self._sender = sender
        self._pii = pii

    async def _phone(self, patient_id: str) -> str | None:
        async with self._factory() as session:
            patient = await session.get(Patient, patient_id)
        if patient is not None and patient.phone_cipher:
            return self._pii.decrypt(patient.phone_cipher)
        return None

    @activity.defn(name=c.SEND_SMS)
    async def send_sms(self, inp: c.SendSmsInput) -> int | None:
        if inp.template not in TEMPLATES:
            raise ApplicationError(f"unknown template {inp.template}", type="invalid_input", non_retryable=True)
        phone = await self._phone(inp.patient_id)
        if phone is None:
            activity.logger.warning("patient %s has no phone on record; SMS %s not sent", inp.patient_id, inp.template)
            return None
        try:
            result = await self._sender.send(
                OutgoingSms(
                    idempotency_key=inp.idempotency_key,
                    phone=phone,
                    template=inp.template,
                    params=inp.params,
                    patient_id=inp.patient_id,
                    visit_id=inp.visit_id,
                    at=inp.at,
                )
            )
        except SmsRejected as err:  # recorded as failed in the outbox; retrying cannot help
            raise ApplicationError(str(err), type="sms_rejected", non_retryable=True) from err
        # SmsThrottled and network errors propagate: the retry policy tries again later
        return result.message_id
