"""The insurance bureau spoken as NHSA (国家医保信息平台): the envelope and its SM2 signature, the
sign-in, msgid idempotency, and the simulator refusing what the real bureau refuses."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from gmssl import sm2

from db import nhsa as db_nhsa
from integrations import insurance_bureau as bureau_client, nhsa
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, FeeDetail, InsuranceBureauClient
from simulators import bureau
from tests.support import uid

PAASID = "hospital-1"
TOKEN = "paas-token-of-hospital-1"  # the gateway's paasToken issued with PAASID
CODE = "H12345678901"
# the bureau's and the client's clock, pinned: a second before Beijing midnight, which a test
# that read the wall clock could straddle (a second 9001 on the wire)
NOW = datetime(2026, 3, 8, 15, 59, 59, tzinfo=UTC)


def pinned() -> datetime:
    return NOW


@dataclass
class Wire:
    """Every request the client sent and the answer it got (the test reads the wire)."""

    sent: list[httpx.Request] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def infnos(self) -> list[str]:
        return [json.loads(r.content)["infno"] for r in self.sent]


@dataclass
class Side:
    client: InsuranceBureauClient
    http: httpx.AsyncClient
    wire: Wire
    private_key: str
    public_key: str


@pytest.fixture
async def side() -> AsyncIterator[Side]:
    async with bureau_side() as it:
        yield it


Fault = Callable[[httpx.Request], httpx.Response | None]


class Faulty(httpx.AsyncBaseTransport):
    """The simulator's transport, with `fault` answering in its place when it returns a response."""

    def __init__(self, inner: httpx.AsyncBaseTransport, fault: Fault | None) -> None:
        self.inner, self.fault = inner, fault

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = self.fault(request) if self.fault else None
        return answer if answer is not None else await self.inner.handle_async_request(request)


def infno_of(request: httpx.Request) -> str:
    return str(json.loads(request.content)["infno"])


@asynccontextmanager
async def bureau_side(fault: Fault | None = None) -> AsyncIterator[Side]:
    """The simulated bureau in memory, knowing a key pair made for this test, and a client of it
    (`fault`: answers in the bureau's place where it returns a response)."""
    private = nhsa.new_sm2_private_key()
    public = nhsa.sm2_public_key(private)
    app = bureau.simulator_app({PAASID: public}, clock=pinned, paas_tokens={PAASID: TOKEN})
    wire = Wire()

    async def sent(request: httpx.Request) -> None:
        wire.sent.append(request)

    async def answered(response: httpx.Response) -> None:
        await response.aread()
        try:
            wire.answers.append(json.loads(response.content, parse_float=Decimal))
        except ValueError:
            wire.answers.append({})

    transport = Faulty(httpx.ASGITransport(app=app), fault)
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [sent], "response": [answered]}
    async with httpx.AsyncClient(base_url="http://bureau", transport=transport, event_hooks=hooks) as http:
        client = InsuranceBureauClient(
            http,
            paasid=PAASID,
            private_key=private,
            fixmedins_code=CODE,
            fixmedins_name="示范医院",
            admvs="110105",
            clock=pinned,
            paas_token=TOKEN,
        )
        yield Side(client, http, wire, private, public)
    app.state.store.close()


_seq = iter(range(1, 10_000))


def msgid(side: Side) -> str:
    return side.client.msgid(NOW, next(_seq))


def day(side: Side) -> Any:
    return side.client.local_day(NOW)


def details(*lines: tuple[str, int]) -> list[FeeDetail]:
    """(med_chrgitm_type, fen) lines."""
    return [
        FeeDetail(
            feedetl_sn=uid("d"),
            code=f"item-{n}",
            name="x",
            med_chrgitm_type=kind,
            amount_fen=fen,
            unit_price_fen=fen,
            quantity=1,
        )
        for n, (kind, fen) in enumerate(lines)
    ]


async def visit(side: Side, psn_no: str, lines: list[FeeDetail], batch: str) -> str:
    """2201 + 2204: the mdtrt_id."""
    mdtrt_id = await side.client.register(
        msgid=msgid(side), psn_no=psn_no, begntime=datetime.now(UTC), ipt_otp_no=batch, operator=WORKER, day=day(side)
    )
    await side.client.upload_fees(
        msgid=msgid(side),
        mdtrt_id=mdtrt_id,
        psn_no=psn_no,
        chrg_bchno=batch,
        details=lines,
        at=datetime.now(UTC),
        operator=WORKER,
        day=day(side),
    )
    return mdtrt_id


async def settlement_step(
    side: Side, step: str, mdtrt_id: str, psn_no: str, batch: str, total: int
) -> bureau_client.Split:
    call = side.client.presettle if step == "2206" else side.client.settle
    return await call(
        msgid=msgid(side),
        mdtrt_id=mdtrt_id,
        psn_no=psn_no,
        chrg_bchno=batch,
        total_fen=total,
        operator=WORKER,
        day=day(side),
    )


async def test_the_envelope_is_signed_and_settles_a_visit(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 12000), ("09", 3000), ("14", 500)), "b1")
    split = await settlement_step(side, "2206", mdtrt_id, psn, "b1", 15500)
    assert (split.total_fen, split.pooled_fen, split.personal_fen, split.self_pay_fen) == (15500, 9000, 6000, 500)
    settled = await settlement_step(side, "2207", mdtrt_id, psn, "b1", 15500)
    assert settled.setl_id and (settled.pooled_fen, settled.personal_fen) == (9000, 6000)
    # one sign-in for the operator's day, then every transaction under it
    assert side.wire.infnos() == ["9001", "2201", "2204", "2206", "2207"]
    sign_no = side.wire.answers[0]["output"]["signinoutb"]["sign_no"]
    for request in side.wire.sent:
        env = json.loads(request.content, parse_float=Decimal)
        assert env["msgid"].startswith(CODE) and len(env["msgid"]) == 30
        assert (env["signtype"], env["infver"], env["fixmedins_code"], env["mdtrtarea_admvs"]) == (
            "SM2",
            "V1.0",
            CODE,
            "110105",
        )
        assert env["sign_no"] == ("" if env["infno"] == "9001" else sign_no)
        # the gateway's signature: SHA-256 of timestamp + paasToken + nonce + timestamp
        h = request.headers
        ts = h["x-tif-timestamp"]
        assert h["x-tif-signature"] == hashlib.sha256(f"{ts}{TOKEN}{h['x-tif-nonce']}{ts}".encode()).hexdigest()
        # the message's: cainfo, SM2 over the body as sent with cainfo emptied
        unsigned = request.content.replace(f'"cainfo":"{env["cainfo"]}"'.encode(), b'"cainfo":""')
        assert nhsa.sm2_verify(side.public_key, unsigned, env["cainfo"])
        assert not nhsa.sm2_verify(side.public_key, unsigned + b" ", env["cainfo"])
        assert int(h["x-tif-timestamp"]) == int(NOW.timestamp())
    # yuan on the wire, two decimals, as numbers
    presettle = json.loads(side.wire.sent[3].content, parse_float=Decimal)
    assert presettle["input"]["data"]["medfee_sumamt"] == Decimal("155.00")
    assert b'"medfee_sumamt":155.00' in side.wire.sent[3].content
    assert side.wire.answers[3]["output"]["setlinfo"]["fund_pay_sumamt"] == Decimal("90.00")
    # 冲正, then the same settlement cannot be undone twice under another msgid
    await side.client.reverse(
        msgid=msgid(side), setl_id=settled.setl_id, mdtrt_id=mdtrt_id, psn_no=psn, operator=WORKER, day=day(side)
    )
    with pytest.raises(GatewayError) as err:
        await side.client.reverse(
            msgid=msgid(side), setl_id=settled.setl_id, mdtrt_id=mdtrt_id, psn_no=psn, operator=WORKER, day=day(side)
        )
    assert err.value.code == "NotSettled"
    assert [s["status"] for s in (await side.http.get(f"/_sandbox/settlements/{psn}")).json()] == ["reversed"]


async def signed_post(side: Side, env: dict[str, Any], *, key: str | None = None, ts: int | None = None) -> Any:
    body = nhsa.with_cainfo(key or side.private_key, nhsa.dumps({**env, "cainfo": ""}))
    headers = nhsa.tif_headers(PAASID, TOKEN, timestamp=ts or int(NOW.timestamp()), nonce=uid("n"))
    return await side.http.post(bureau_client.PATH, content=body, headers=headers)


def envelope(side: Side, infno: str, inp: dict[str, Any], *, sign_no: str, msg: str | None = None) -> dict[str, Any]:
    return json.loads(side.client.envelope(infno, msg or msgid(side), WORKER, sign_no, inp))


@pytest.mark.parametrize("tamper", ["body", "key", "token", "stale", "missing", "cainfo", "paasid"])
async def test_a_tampered_or_unsigned_request_is_refused(side: Side, tamper: str) -> None:
    """The gateway's x-tif-signature (keyed by the paasToken) and the envelope's cainfo (SM2 by the
    hospital's key): a tampered body, another SM2 key, another token, a stale timestamp or a
    signature left out is refused, and nothing is recorded."""
    sign_no = await side.client.sign_in(WORKER, day(side))
    env = envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=sign_no)
    now = int(NOW.timestamp())
    body = nhsa.with_cainfo(side.private_key, nhsa.dumps(env))
    headers = nhsa.tif_headers(PAASID, TOKEN, timestamp=now, nonce=uid("n"))
    expected = {
        "body": "CainfoDoesNotMatch",
        "key": "CainfoDoesNotMatch",
        "token": "SignatureDoesNotMatch",
        "stale": "StaleRequest",
        "missing": "MissingSignature",
        "cainfo": "MissingSignature",
        "paasid": "InvalidPaasid",
    }[tamper]
    if tamper == "body":
        body = body.replace(b'"p1"', b'"p2"')
    elif tamper == "key":  # signed by another key than the one the bureau holds
        body = nhsa.with_cainfo(nhsa.new_sm2_private_key(), nhsa.dumps(env))
    elif tamper == "token":  # the gateway's signature keyed by another token
        headers = nhsa.tif_headers(PAASID, TOKEN + "x", timestamp=now, nonce="n")
    elif tamper == "stale":
        headers = nhsa.tif_headers(PAASID, TOKEN, timestamp=now - 600, nonce="n")
    elif tamper == "missing":
        del headers["x-tif-signature"]
    elif tamper == "cainfo":
        body = nhsa.dumps(env)
    elif tamper == "paasid":
        headers["x-tif-paasid"] = "someone-else"
    r = await side.http.post(bureau_client.PATH, content=body, headers=headers)
    assert r.status_code == 401
    assert r.json()["infcode"] == -1 and r.json()["err_msg"].startswith(f"[{expected}]")
    # nothing was recorded: the same msgid, properly signed, is a first request
    ok = await signed_post(side, env)
    assert ok.json()["infcode"] == 0, ok.text


async def test_a_client_with_the_wrong_key_is_refused(side: Side) -> None:
    other = InsuranceBureauClient(
        side.http,
        paasid=PAASID,
        private_key=nhsa.new_sm2_private_key(),
        fixmedins_code=CODE,
        fixmedins_name="x",
        admvs="110105",
        clock=pinned,
        paas_token=TOKEN,
    )
    with pytest.raises(GatewayError) as err:
        await other.sign_in(WORKER, day(side))
    assert err.value.code == "CainfoDoesNotMatch" and not err.value.retryable


async def test_no_transaction_without_a_valid_sign_in(side: Side) -> None:
    for sign_no in ("", "SN-made-up"):
        r = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=sign_no))
        assert r.json()["infcode"] == -1 and r.json()["err_msg"].startswith("[SignInInvalid]")
    # another operator's sign_no is not this one's
    theirs = await side.client.sign_in(bureau_client.PATIENT_APP, day(side))
    r = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=theirs))
    assert r.json()["err_msg"].startswith("[SignInInvalid]")
    # the bureau ends the sign-ins (its day is over): the client signs in again, once, and goes on
    psn = uid("p")
    await visit(side, psn, details(("03", 100)), "b1")
    assert (await side.http.post("/_sandbox/sign-ins/revoke")).json()["revoked"] >= 1
    side.wire.sent.clear()
    await visit(side, psn, details(("03", 100)), "b2")
    assert side.wire.infnos() == ["2201", "9001", "2201", "2204"]
    first, again = (json.loads(side.wire.sent[i].content) for i in (0, 2))
    assert first["msgid"] == again["msgid"] and first["sign_no"] != again["sign_no"]


async def test_a_msgid_is_one_request(side: Side) -> None:
    sign_no = await side.client.sign_in(WORKER, day(side))
    msg = msgid(side)
    first = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=sign_no, msg=msg))
    assert first.json()["infcode"] == 0
    # the same request again (a retry: another inf_time, another nonce): the same answer
    again = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=sign_no, msg=msg))
    assert again.json() == first.json()
    # the same msgid with another input: refused, and nothing new at the bureau
    other = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p2"}}, sign_no=sign_no, msg=msg))
    assert other.json()["infcode"] == -1 and other.json()["err_msg"].startswith("[MsgidReused]")
    wrong = await signed_post(side, envelope(side, "2201", {"data": {"psn_no": "p1"}}, sign_no=sign_no, msg="H1" * 3))
    assert wrong.json()["err_msg"].startswith("[InvalidMsgid]")


async def test_the_totals_are_the_uploaded_details(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 1000), ("09", 250)), "b1")
    for total in (1249, 1251, 0):
        with pytest.raises(GatewayError) as err:
            await settlement_step(side, "2206", mdtrt_id, psn, "b1", total)
        assert err.value.code == "TotalMismatch"
    # a detail whose sum is not cnt x pric is refused at the upload
    bad = FeeDetail(
        feedetl_sn="d", code="c", name="n", med_chrgitm_type="03", amount_fen=301, unit_price_fen=100, quantity=3
    )
    with pytest.raises(GatewayError) as err:
        await visit(side, psn, [bad], "b2")
    assert err.value.code == "InvalidParameter"
    assert (await settlement_step(side, "2206", mdtrt_id, psn, "b1", 1250)).total_fen == 1250


async def test_2207_needs_a_live_2206_with_the_same_figures(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 1000)), "b1")
    with pytest.raises(GatewayError) as err:
        await settlement_step(side, "2207", mdtrt_id, psn, "b1", 1000)
    assert err.value.code == "NotPresettled"
    await settlement_step(side, "2206", mdtrt_id, psn, "b1", 1000)
    await side.client.upload_fees(
        msgid=msgid(side),
        mdtrt_id=mdtrt_id,
        psn_no=psn,
        chrg_bchno="b1",
        details=details(("04", 500)),
        at=datetime.now(UTC),
        operator=WORKER,
        day=day(side),
    )
    with pytest.raises(GatewayError) as err:  # the bill grew after the 2206
        await settlement_step(side, "2207", mdtrt_id, psn, "b1", 1500)
    assert err.value.code == "PresettleMismatch"
    await settlement_step(side, "2206", mdtrt_id, psn, "b1", 1500)
    assert (await settlement_step(side, "2207", mdtrt_id, psn, "b1", 1500)).setl_id
    with pytest.raises(GatewayError) as err:  # settled: no live 2206 is left
        await settlement_step(side, "2207", mdtrt_id, psn, "b1", 1500)
    assert err.value.code == "NotPresettled"


async def test_2208_only_on_a_settled_setl_id(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 1000)), "b1")
    for setl_id in ("ST-unknown", ""):
        with pytest.raises(GatewayError) as err:
            await side.client.reverse(
                msgid=msgid(side), setl_id=setl_id, mdtrt_id=mdtrt_id, psn_no=psn, operator=WORKER, day=day(side)
            )
        assert err.value.code in ("SettlementNotFound", "MissingParameter")


async def test_a_locked_card_settles_nothing(side: Side) -> None:
    psn = uid("p")
    mdtrt_id = await visit(side, psn, details(("03", 1000)), "b1")
    await settlement_step(side, "2206", mdtrt_id, psn, "b1", 1000)

    async def lock(action: str) -> bool:
        return await side.client.set_card_lock(
            action=action,
            msgid=msgid(side),
            psn_no=psn,
            reason="overdue",
            at=datetime.now(UTC),
            operator=WORKER,
            day=day(side),
        )

    assert await lock("lock")
    for step in ("2207", "2206"):
        with pytest.raises(GatewayError) as err:
            await settlement_step(side, step, mdtrt_id, psn, "b1", 1000)
        assert err.value.code == "CardLocked"
    assert not await lock("unlock")
    await settlement_step(side, "2206", mdtrt_id, psn, "b1", 1000)
    assert (await settlement_step(side, "2207", mdtrt_id, psn, "b1", 1000)).setl_id
    assert "yhf-card-lock" in side.wire.infnos()


@pytest.mark.parametrize(
    ("fen", "yuan"),
    [
        (0, "0.00"),
        (1, "0.01"),
        (10, "0.10"),
        (15500, "155.00"),
        (-5, "-0.05"),
        (123456789012345679, "1234567890123456.79"),
    ],
)
def test_yuan_and_fen_convert_exactly(fen: int, yuan: str) -> None:
    assert str(nhsa.fen_to_yuan(fen)) == yuan
    assert nhsa.yuan_to_fen(Decimal(yuan)) == fen
    wire = nhsa.dumps({"amount": nhsa.fen_to_yuan(fen)})
    assert wire == f'{{"amount":{yuan}}}'.encode()
    assert nhsa.yuan_to_fen(nhsa.loads(wire)["amount"]) == fen


def test_inexact_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number of fen"):
        nhsa.yuan_to_fen(Decimal("0.001"))
    with pytest.raises(TypeError):
        nhsa.yuan_to_fen(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nhsa.dumps({"amount": 0.1})
    with pytest.raises(TypeError):
        nhsa.fen_to_yuan(1.5)  # type: ignore[arg-type]
    assert nhsa.yuan_to_fen(Decimal("0.1") + Decimal("0.2")) == 30


def test_keys_and_msgids() -> None:
    private = nhsa.new_sm2_private_key()
    assert len(private) == 64 and len(nhsa.sm2_public_key(private)) == 128
    assert (
        bureau.public_key_of(private)
        == nhsa.sm2_public_key(private)
        == bureau.public_key_of("04" + nhsa.sm2_public_key(private))
    )
    with pytest.raises(ValueError):
        nhsa.sm2_public_key("00" * 32)
    at = datetime(2026, 1, 2, 3, 4, 5)
    assert nhsa.make_msgid(CODE, at, 7) == CODE + "20260102030405" + "0007"
    with pytest.raises(ValueError):
        nhsa.make_msgid("H1", at, 7)


async def test_a_sign_in_is_held_per_operator_and_day(side: Side) -> None:
    today = day(side)
    first = await side.client.sign_in(WORKER, today)
    assert await side.client.sign_in(WORKER, today) == first
    other = await side.client.sign_in(bureau_client.PATIENT_APP, today)
    assert other != first
    tomorrow = today + timedelta(days=1)
    await side.client.sign_in(WORKER, tomorrow)
    assert await side.client.sign_in(WORKER, today) != first  # another day came: the old ones are let go
    assert side.wire.infnos() == ["9001"] * 4


def test_the_signature_is_the_reference_implementations() -> None:
    """Ours (integrations/nhsa.py) and gmssl's SM2 sign and verify each other's signatures: the
    same curve, Z_A and r||s. gmssl's own point arithmetic sometimes fails (TypeError): skipped."""
    checked = 0
    for n in range(12):
        private = nhsa.new_sm2_private_key()
        public = nhsa.sm2_public_key(private)
        message = f"1732950000nonce{n}hospital-1".encode()
        reference = sm2.CryptSM2(private_key=private, public_key=public)
        try:
            assert reference._kg(int(private, 16), sm2.default_ecc_table["g"]) == public
            assert reference.verify_with_sm3(nhsa.sm2_sign(private, message), message)
            theirs = reference.sign_with_sm3(message, nhsa.new_sm2_private_key())
        except TypeError:
            continue
        assert nhsa.sm2_verify(public, message, theirs) and bureau.sm2_verified(public, message, theirs)
        assert not nhsa.sm2_verify(public, message + b"!", theirs)
        checked += 1
    assert checked >= 6


async def test_concurrent_first_calls_sign_in_once_in_the_sign_in_range(side: Side) -> None:
    today = day(side)
    sign_nos = await asyncio.gather(*(side.client.sign_in(WORKER, today) for _ in range(5)))
    assert len(set(sign_nos)) == 1 and side.wire.infnos() == ["9001"]
    # a sign-in's msgid is drawn from SIGN_IN_SEQUENCES up, which a stored request never takes
    assert int(json.loads(side.wire.sent[0].content)["msgid"][-4:]) >= bureau_client.SIGN_IN_SEQUENCES
    assert db_nhsa.STORED_SEQUENCES == bureau_client.SIGN_IN_SEQUENCES
    with pytest.raises(ValueError):
        side.client.msgid(NOW, bureau_client.SIGN_IN_SEQUENCES)


async def test_a_sign_in_refused_twice_is_retryable_not_final() -> None:
    def refuse(request: httpx.Request) -> httpx.Response | None:
        if infno_of(request) == "2201":
            return httpx.Response(200, json={"infcode": -1, "err_msg": "[SignInInvalid] 签到编号无效"})
        return None

    async with bureau_side(refuse) as side:
        with pytest.raises(GatewayError) as err:
            await visit(side, uid("p"), details(("03", 100)), "b1")
        assert err.value.code == "SignInInvalid" and err.value.retryable
        assert side.wire.infnos() == ["9001", "2201", "9001", "2201"]  # signed in again once, then given up


async def test_an_answer_that_is_not_the_bureaus_is_retryable() -> None:
    answers = iter([httpx.Response(200, content=b"<html>gateway</html>"), httpx.Response(200, json=[1])])

    def garble(request: httpx.Request) -> httpx.Response | None:
        return next(answers, None) if infno_of(request) == "2201" else None

    async with bureau_side(garble) as side:
        for _ in range(2):
            with pytest.raises(GatewayError) as err:
                await visit(side, uid("p"), details(("03", 100)), "b1")
            assert err.value.code == "UnreadableAnswer" and err.value.retryable


async def test_the_bureaus_err_msg_is_not_kept_only_its_code() -> None:
    """A real err_msg may name the person or carry an ID number: the error's text is our own."""

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if infno_of(request) == "2201":
            text = "[PersonNotFound] 参保人张三（身份证号110105199001011234）不存在"
            return httpx.Response(200, json={"infcode": -1, "err_msg": text})
        return None

    async with bureau_side(refuse) as side:
        with pytest.raises(GatewayError) as err:
            await visit(side, uid("p"), details(("03", 100)), "b1")
    assert err.value.code == "PersonNotFound" and not err.value.retryable
    assert "110105199001011234" not in str(err.value) and "张三" not in str(err.value)
    assert str(err.value) == "PersonNotFound: the bureau refused 2201 (PersonNotFound)"
