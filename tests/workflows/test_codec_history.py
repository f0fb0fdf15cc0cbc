"""A visit run with the payload codec on: what Temporal stores is ciphertext. Its history, read
with a client that has no codec (as the server, the CLI or anyone with access to the cluster
would read it), holds no drug name, amount or patient id anywhere; the UI's codec call
(/v1/ops/codec/decode) gives them back.

Search attributes are indexed, so no codec touches them: the visit's carry no id and no amount
of the patient's, only a keyed pseudonym (`PatientTag`) and a band (`BalanceBand`)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from config import Settings
from domain.policy import PaymentPolicy
from integrations.factory import Integrations
from integrations.temporal import ENCODING, connect
from tests.support import add_patient, add_visit
from worker import create_worker
from workflows import contracts as c
from workflows.visit import VisitWorkflow

# a test key (never a real one): the replay tests decode the history recorded with it
TEST_PAYLOAD_KEY = "test-2026:" + base64.b64encode(b"yihoufu replay test key, public!").decode()
ENCRYPTED_HISTORIES = Path(__file__).resolve().parent.parent / "replay" / "histories_encrypted"
DRUG = "阿莫西林胶囊-codec"
PRICE, QUANTITY = 31415, 2

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def codec_client(temporal_env: WorkflowEnvironment, settings: Settings) -> Client:
    target = temporal_env.client.service_client.config.target_host
    return await connect(settings.model_copy(update={"temporal_address": target, "payload_key": TEST_PAYLOAD_KEY}))


@pytest.fixture
async def codec_worker(
    codec_client: Client, settings: Settings, factory: Factory, integrations: Integrations
) -> AsyncIterator[str]:
    async with AsyncExitStack() as stack:
        async with create_worker(codec_client, settings, factory, stack, integrations=integrations):
            yield settings.task_queue


def payloads(message: Message, indexed: bool = False) -> Iterator[tuple[Payload, bool]]:
    """Every payload in a history event, and whether it sits in search attributes."""
    if isinstance(message, Payload):
        yield message, indexed
        return
    inside = indexed or isinstance(message, SearchAttributes)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else []
        else:
            values = value if field.is_repeated else [value]
        for v in values:
            yield from payloads(v, inside)


LOCAL_ACTIVITY_BOOKKEEPING = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def local_markers(history: WorkflowHistory) -> list[HistoryEvent]:
    return [
        e
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]


async def visit_with_a_drug(factory: Factory, client: Client, queue: str) -> tuple[WorkflowHandle, str]:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id)
    handle = await client.start_workflow(
        VisitWorkflow.run,
        c.VisitInput(
            visit_id=visit_id,
            patient_id=patient_id,
            registration_fee_fen=500,
            policy=replace(PaymentPolicy(), auto_discharge_after_seconds=2 * 86400),
            department="内科",
            patient_tag="tag-" + patient_id[-6:][::-1],  # the API's is a keyed hash; any pseudonym will do
        ),
        id=c.workflow_id(visit_id),
        task_queue=queue,
    )
    drug = c.ItemInput(item_id="rx1", code="X01", name=DRUG, category="drug", unit_price_fen=PRICE, quantity=QUANTITY)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("checked_in", {"channel": "nurse_station"}),
        ("called", {}),
        ("consultation_started", {}),
        ("prescribed", {"items": [drug], "skin_test_required": False}),
        ("dispensed", {}),
        ("discharged", {}),
    ]
    for n, (type_, fields) in enumerate(steps):
        inp = c.RecordEventInput(event_id=f"e{n}", type=type_, occurred_at=datetime.now(UTC), **fields)
        await handle.execute_update(VisitWorkflow.record_event, inp, id=f"e{n}")
    return handle, patient_id


async def test_temporal_stores_only_ciphertext_and_the_codec_endpoint_reads_it(
    temporal_env: WorkflowEnvironment,
    codec_client: Client,
    codec_worker: str,
    factory: Factory,
    settings: Settings,
    integrations: Integrations,
) -> None:
    handle, patient_id = await visit_with_a_drug(factory, codec_client, codec_worker)
    state = await handle.query(VisitWorkflow.state)  # through the codec: as the API sees it
    assert state.payment_status == "due" and state.balance_fen == 500 + PRICE * QUANTITY
    # a refusal travels encrypted too, and reads as before through the codec (the API's 409)
    late = c.RecordEventInput(event_id="late", type="called", occurred_at=datetime.now(UTC))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(VisitWorkflow.record_event, late, id="late")
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "invalid_transition"
    assert "not allowed while the visit is discharged" in cause.message and cause.details[0]["stage"] == "discharged"

    # the history as stored, read without the codec
    stored = await temporal_env.client.get_workflow_handle(handle.id).fetch_history()
    # a local activity's marker carries the SDK's own bookkeeping in clear (its sequence number,
    # attempt, type, times); its result is encrypted like any payload
    bookkeeping = [
        event.marker_recorded_event_attributes.details["data"].payloads[0] for event in local_markers(stored)
    ]
    assert bookkeeping, "the bookings run as local activities"
    for p in bookkeeping:
        assert set(json.loads(p.data)) <= LOCAL_ACTIVITY_BOOKKEEPING, p.data
    coded = [p for event in stored.events for p, indexed in payloads(event) if not indexed and p not in bookkeeping]
    assert len(coded) > 10 and all(p.metadata["encoding"] == ENCODING for p in coded), [
        p.metadata for p in coded if p.metadata["encoding"] != ENCODING
    ]
    # as UTF-8, as JSON writes it (\u escapes), and the amounts and the patient's id
    secrets = [DRUG.encode(), json.dumps(DRUG)[1:-1].encode(), str(PRICE).encode(), str(PRICE * QUANTITY).encode()]
    secrets += [str(500 + PRICE * QUANTITY).encode(), patient_id.encode()]  # the balance, the patient
    for p in coded:
        for secret in secrets:
            assert secret not in p.SerializeToString(), secret.decode()
    raw = b"".join(event.SerializeToString() for event in stored.events)
    # nowhere at all, search attributes included: the drug, its price, the balance, the patient's id
    assert all(secret not in raw for secret in secrets), [s.decode() for s in secrets if s in raw]
    indexed_names = {k for event in stored.events for k in _indexed_names(event)}
    assert {"PatientTag", "BalanceBand"} <= indexed_names and "PatientId" not in indexed_names

    # the UI's codec call gives the payloads back
    app = create_app(
        settings.model_copy(update={"payload_key": TEST_PAYLOAD_KEY}), temporal=codec_client, integrations=integrations
    )
    body = {
        "payloads": [{"metadata": {k: _b64(v) for k, v in p.metadata.items()}, "data": _b64(p.data)} for p in coded]
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        r = await http.post("/v1/ops/codec/decode", json=body, headers={"X-Namespace": "default"})
    assert r.status_code == 200, r.text
    clear = json.dumps(
        [json.loads(base64.b64decode(p["data"])) for p in r.json()["payloads"] if p["data"]], ensure_ascii=False
    )
    assert DRUG in clear and patient_id in clear and str(PRICE) in clear
    await record_encrypted(stored, "visit_dispensed_with_codec")
    await handle.terminate("test over")


def _indexed_names(event: Message) -> Iterator[str]:
    for field, value in event.ListFields():
        if isinstance(value, SearchAttributes):
            yield from value.indexed_fields.keys()
        elif field.message_type is not None and not field.is_repeated:
            yield from _indexed_names(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def record_encrypted(history: WorkflowHistory, name: str) -> None:
    """With YHF_RECORD_HISTORIES=1, keep the encrypted history for tests/replay/test_replay_codec.py."""
    if os.environ.get("YHF_RECORD_HISTORIES") != "1":
        return
    path = ENCRYPTED_HISTORIES / f"{name}.json"
    if path.exists():
        return
    ENCRYPTED_HISTORIES.mkdir(parents=True, exist_ok=True)
    path.write_text(history.to_json())
