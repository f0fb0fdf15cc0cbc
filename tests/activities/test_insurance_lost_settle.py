"""The saga's 冲正 of a settlement whose 2207 answer was lost: no setl_id is stored, so the
bureau's settlement is taken back by the 2207's msgid (2601), not by 2208; a 2207 never sent
needs nothing at the bureau; a 2601 refused for another reason fails visibly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from db.models import AuditLog
from db.nhsa import NhsaMessage
from tests.activities.test_nhsa_retries import Factory, Faulty, faulty, presettled, row_of
from workflows import contracts as c

__all__ = ["faulty"]  # the fixture, used by name


def spy(transport: Faulty) -> list[dict[str, Any]]:
    """Every envelope sent through the faulty transport from now on."""
    sent: list[dict[str, Any]] = []

    def fault(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))
        return None

    transport.fault = fault
    return sent


async def test_a_2207_whose_answer_was_lost_is_taken_back_by_2601(factory: Factory, faulty, simulators) -> None:
    transport, acts, bureau = faulty
    patient_id, settlement_id, _ = await presettled(factory, bureau)
    inp = c.SettlementInput(settlement_id=settlement_id)
    transport.lose = {"2207"}  # the bureau settles; its answer never comes back
    with pytest.raises(httpx.ReadTimeout):
        await ActivityEnvironment().run(acts.settle_insurance, inp)
    row = await row_of(factory, settlement_id)
    assert (row.status, row.bureau_settlement_no) == ("presettled", None)
    [held] = await simulators.inspect.settlements(patient_id)
    assert held.status == "settled"  # the bureau holds money we hold no setl_id of
    sent = spy(transport)
    result = await ActivityEnvironment().run(acts.reverse_insurance, inp)
    assert result.status == "reversed"
    async with factory() as session:
        settle_msgid = await session.scalar(
            select(NhsaMessage.msgid).where(NhsaMessage.request_key == f"2207:{settlement_id}")
        )
        cancelled = await session.scalar(
            select(AuditLog).where(AuditLog.subject_id == patient_id, AuditLog.action == "insurance_cancelled")
        )
    assert [e["infno"] for e in sent] == ["2601"]
    assert sent[0]["input"]["data"] == {"psn_no": patient_id, "omsgid": settle_msgid, "oinfno": "2207"}
    assert [s.status for s in await simulators.inspect.settlements(patient_id)] == ["reversed"]
    assert cancelled is not None and cancelled.detail["omsgid"] == settle_msgid
    assert (await row_of(factory, settlement_id)).status == "reversed"
    # the saga's step again: nothing more at the bureau
    assert (await ActivityEnvironment().run(acts.reverse_insurance, inp)).status == "reversed"
    assert [e["infno"] for e in sent] == ["2601"]


async def test_no_2207_sent_nothing_at_the_bureau_and_a_2207_never_received_holds_nothing(
    factory: Factory, faulty, simulators
) -> None:
    transport, acts, bureau = faulty
    _, never_settled, _ = await presettled(factory, bureau)
    sent = spy(transport)
    assert (
        await ActivityEnvironment().run(acts.reverse_insurance, c.SettlementInput(settlement_id=never_settled))
    ).status == "reversed"
    assert sent == []  # no 2207 msgid kept: nothing was sent, nothing to take back
    # a 2207 lost on its way there: the bureau never had it (2601: OriginalNotFound), nothing held
    patient_id, lost_on_the_way, _ = await presettled(factory, bureau)
    inp = c.SettlementInput(settlement_id=lost_on_the_way)

    def unreachable(request: httpx.Request) -> None:
        if json.loads(request.content)["infno"] == "2207":
            raise httpx.ConnectError("no route", request=request)

    transport.fault = unreachable
    with pytest.raises(httpx.ConnectError):
        await ActivityEnvironment().run(acts.settle_insurance, inp)
    sent = spy(transport)
    assert (await ActivityEnvironment().run(acts.reverse_insurance, inp)).status == "reversed"
    assert [e["infno"] for e in sent] == ["2601"]
    assert [s.status for s in await simulators.inspect.settlements(patient_id)] == ["presettled"]


async def test_a_2601_refused_otherwise_fails_visibly(factory: Factory, faulty, simulators) -> None:
    transport, acts, bureau = faulty
    patient_id, settlement_id, _ = await presettled(factory, bureau)
    inp = c.SettlementInput(settlement_id=settlement_id)
    transport.lose = {"2207"}
    with pytest.raises(httpx.ReadTimeout):
        await ActivityEnvironment().run(acts.settle_insurance, inp)

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["infno"] == "2601":
            return httpx.Response(200, json={"infcode": -1, "err_msg": "[SettlementLocked] 已对账，不能冲正"})
        return None

    transport.fault = refuse
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.reverse_insurance, inp)
    assert err.value.type == "bureau_reversal_refused" and err.value.non_retryable
    row = await row_of(factory, settlement_id)
    assert row.status == "presettled" and "2601" in (row.detail or "") and "SettlementLocked" in (row.detail or "")
    assert [s.status for s in await simulators.inspect.settlements(patient_id)] == ["settled"]
