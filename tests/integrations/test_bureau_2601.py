"""2601 冲正交易: a message whose answer never came is taken back by its msgid (omsgid, oinfno).
The simulated bureau undoes what it did (2207: the settlement reversed; 2204: the details
revoked; 2201: the registration revoked), answers a repeat the same, and refuses an unknown
omsgid, another person's, an infno that cannot be taken back, and an original it refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER
from tests.integrations.test_nhsa import Side, bureau_side, day, details, msgid, settlement_step, visit
from tests.support import uid


@pytest.fixture
async def side() -> AsyncIterator[Side]:
    async with bureau_side() as it:
        yield it


async def cancel(side: Side, psn_no: str, omsgid: str, oinfno: str, *, msg: str | None = None) -> None:
    await side.client.cancel(
        msgid=msg or msgid(side), psn_no=psn_no, omsgid=omsgid, oinfno=oinfno, operator=WORKER, day=day(side)
    )


async def refused(side: Side, psn_no: str, omsgid: str, oinfno: str) -> str:
    with pytest.raises(GatewayError) as err:
        await cancel(side, psn_no, omsgid, oinfno)
    assert not err.value.retryable
    return err.value.code


def sent_msgid(side: Side, infno: str) -> str:
    """The msgid of the last `infno` the client sent."""
    return [json.loads(r.content)["msgid"] for r in side.wire.sent if json.loads(r.content)["infno"] == infno][-1]


async def seen(side: Side, what: str, psn_no: str) -> list[dict[str, Any]]:
    return list((await side.http.get(f"/_sandbox/{what}/{psn_no}")).json())


async def settled_visit(side: Side, psn_no: str) -> tuple[str, str]:
    """2201, 2204, 2206, 2207 of an X-ray and a drug (covered): (mdtrt_id, the 2207's msgid)."""
    mdtrt_id = await visit(side, psn_no, details(("03", 12000), ("09", 3000)), "b1")
    await settlement_step(side, "2206", mdtrt_id, psn_no, "b1", 15000)
    await settlement_step(side, "2207", mdtrt_id, psn_no, "b1", 15000)
    return mdtrt_id, sent_msgid(side, "2207")


async def test_a_2207_taken_back_by_its_msgid_is_reversed_once(side: Side) -> None:
    psn = uid("p")
    mdtrt_id, settle_msgid = await settled_visit(side, psn)
    assert [s["status"] for s in await seen(side, "settlements", psn)] == ["settled"]
    repeat = msgid(side)
    await cancel(side, psn, settle_msgid, "2207", msg=repeat)
    first_answer = side.wire.answers[-1]
    [reversed_] = await seen(side, "settlements", psn)
    assert reversed_["status"] == "reversed"
    assert first_answer["infcode"] == 0
    assert first_answer["output"]["data"] == {"omsgid": settle_msgid, "oinfno": "2207", "psn_no": psn}
    # the same 2601 again (its answer lost too): the stored answer; under another msgid: the same
    await cancel(side, psn, settle_msgid, "2207", msg=repeat)
    assert side.wire.answers[-1] == first_answer
    await cancel(side, psn, settle_msgid, "2207")
    assert side.wire.answers[-1]["output"] == first_answer["output"]
    assert [s["status"] for s in await seen(side, "settlements", psn)] == ["reversed"]
    # the personal account has its money back: the bill pre-settles as the first time
    again = await settlement_step(side, "2206", mdtrt_id, psn, "b1", 15000)
    assert (again.pooled_fen, again.personal_fen, again.self_pay_fen) == (9000, 6000, 0)


async def test_a_2204_taken_back_revokes_its_details_and_a_2201_its_registration(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 12000)), "b1")
    upload = sent_msgid(side, "2204")
    register = sent_msgid(side, "2201")
    await side.client.upload_fees(
        msgid=msgid(side),
        mdtrt_id=mdtrt_id,
        psn_no=psn,
        chrg_bchno="b1",
        details=details(("09", 3000)),
        at=side.client.now(),
        operator=WORKER,
        day=day(side),
    )
    assert [(t["status"], t["fees_fen"]) for t in await seen(side, "treatments", psn)] == [("registered", 15000)]
    await cancel(side, psn, upload, "2204")  # the first upload only: the second stays
    assert [(t["status"], t["fees_fen"]) for t in await seen(side, "treatments", psn)] == [("registered", 3000)]
    await cancel(side, psn, register, "2201")
    assert [(t["status"], t["fees_fen"]) for t in await seen(side, "treatments", psn)] == [("revoked", 0)]


async def test_2601_refuses_what_it_cannot_take_back(side: Side) -> None:
    psn, other = uid("p"), uid("p")
    mdtrt_id, settle_msgid = await settled_visit(side, psn)
    presettle_msgid = sent_msgid(side, "2206")
    upload_msgid = sent_msgid(side, "2204")
    assert await refused(side, psn, msgid(side), "2207") == "OriginalNotFound"  # never sent
    assert await refused(side, other, settle_msgid, "2207") == "OriginalNotFound"  # another person's
    assert await refused(side, psn, presettle_msgid, "2206") == "NotReversible"  # nothing to undo
    assert await refused(side, psn, settle_msgid, "2205") == "NotReversible"
    assert await refused(side, psn, settle_msgid, "2201") == "InvalidParameter"  # not what that msgid was
    assert await refused(side, psn, upload_msgid, "2204") == "AlreadySettled"  # 2208 first
    # a 2207 the bureau refused did nothing: nothing to take back
    with pytest.raises(GatewayError):
        await settlement_step(side, "2207", mdtrt_id, psn, "b1", 15000)  # its 2206 is spent
    assert await refused(side, psn, sent_msgid(side, "2207"), "2207") == "OriginalFailed"
    # reversed by 2208 already: a 2601 of its 2207 finds nothing settled
    [row] = await seen(side, "settlements", psn)
    await side.client.reverse(
        msgid=msgid(side), setl_id=row["settlement_no"], mdtrt_id=mdtrt_id, psn_no=psn, operator=WORKER, day=day(side)
    )
    assert await refused(side, psn, settle_msgid, "2207") == "NotSettled"
    # a refusal is an answer too: the same 2601 msgid is answered the same
    again = msgid(side)
    for _ in range(2):
        with pytest.raises(GatewayError) as err:
            await cancel(side, psn, settle_msgid, "2207", msg=again)
        assert err.value.code == "NotSettled"
