"""WeChat Pay API v3, simulated: the other side of `integrations.payments.wechat`, for dev
and tests. It checks what WeChat checks and keeps its state in memory.

`wechat_simulator_app` verifies the merchant's signature (serial, timestamp, nonce, RSA),
the parameters of an order, answers signed, and on `/_sim/pay` posts a signed notification
with an AES-256-GCM encrypted resource to the order's notify_url, as WeChat does.

`python -m simulators.wechat PORT DATA_FOLDER` serves it for the sandbox merchant, with the
keys of `simulators.keys.sandbox_keys` (devstack starts it)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from domain.money import yuan
from integrations.payments.wechat import BILL_COLUMNS, BILL_SUMMARY, MAX_SKEW_SECONDS, SIGNATURE_TYPE
from simulators.keys import rsa_sign, rsa_verify, sandbox_keys


@dataclass(frozen=True, kw_only=True)
class Merchant:
    mchid: str
    appid: str
    serial: str
    public_key: str  # the merchant's, registered with WeChat


@dataclass
class SimState:
    orders: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    refunds: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (mchid, out_refund_no)
    nonces: set[str] = field(default_factory=set)
    notifications: list[tuple[str, int]] = field(default_factory=list)  # (out_trade_no, our HTTP answer)
    refund_outcome: dict[str, str] = field(default_factory=dict)  # out_trade_no -> SUCCESS | ABNORMAL | CLOSED
    bill_tokens: dict[str, tuple[str, bool]] = field(default_factory=dict)  # download token -> (day, gzip)
    extra_bill_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


AUTH = re.compile(r'(\w+)="([^"]*)"')


def wechat_simulator_app(
    merchants: list[Merchant],
    *,
    platform_private_key: str,
    platform_public_key_id: str,
    apiv3_key: str,
    refund_delay: float = 0.5,
) -> FastAPI:
    app = FastAPI(title="WeChat Pay v3 (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    state = SimState()
    app.state.wechat = state
    by_mchid = {m.mchid: m for m in merchants}

    def signature_headers(body: str) -> dict[str, str]:
        """WeChat signs every answer, an empty 204 included."""
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": rsa_sign(platform_private_key, f"{stamp}\n{nonce}\n{body}\n"),
            "Wechatpay-Serial": platform_public_key_id,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }

    def signed(data: dict[str, Any], status: int = 200) -> JSONResponse:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return JSONResponse(content=data, status_code=status, headers=signature_headers(body))

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status)

    def authenticate(request: Request, raw: bytes) -> Merchant | JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.startswith(SIGNATURE_TYPE + " "):
            return error(401, "SIGN_ERROR", "Authorization 头缺失或签名类型错误")
        fields = dict(AUTH.findall(header))
        merchant = by_mchid.get(fields.get("mchid", ""))
        if merchant is None:
            return error(401, "SIGN_ERROR", "商户号不存在")
        if fields.get("serial_no") != merchant.serial:
            return error(401, "SIGN_ERROR", "商户证书序列号有误")
        stamp, nonce = fields.get("timestamp", ""), fields.get("nonce_str", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_SKEW_SECONDS:
            return error(401, "SIGN_ERROR", "请求时间戳已过期")
        if not nonce or nonce in state.nonces:
            return error(401, "SIGN_ERROR", "随机串重复")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = f"{request.method}\n{path}\n{stamp}\n{nonce}\n{raw.decode()}\n"
        if not rsa_verify(merchant.public_key, message, fields.get("signature", "")):
            return error(401, "SIGN_ERROR", "签名错误")
        state.nonces.add(nonce)
        return merchant

    async def signed_request(request: Request) -> tuple[Merchant, dict[str, Any]] | JSONResponse:
        """The merchant behind a correctly signed request, and its JSON body."""
        raw = await request.body()
        merchant = authenticate(request, raw)
        if isinstance(merchant, JSONResponse):
            return merchant
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "PARAM_ERROR", "请求体不是合法的 JSON")
        return merchant, body if isinstance(body, dict) else {}

    def transaction(order: dict[str, Any]) -> dict[str, Any]:
        tx = {
            "appid": order["appid"],
            "mchid": order["mchid"],
            "out_trade_no": order["out_trade_no"],
            "trade_state": order["trade_state"],
            "trade_type": "MWEB",
            "amount": {"total": order["total"], "currency": "CNY"},
        }
        if order["trade_state"] == "SUCCESS":
            tx.update(
                transaction_id=order["transaction_id"],
                success_time=order["success_time"],
                bank_type="OTHERS",
                trade_state_desc="支付成功",
                amount={
                    "total": order["total"],
                    "payer_total": order["total"],
                    "currency": "CNY",
                    "payer_currency": "CNY",
                },
            )
        return tx

    @app.post("/v3/pay/transactions/h5")
    async def create(request: Request) -> JSONResponse:
        checked = await signed_request(request)
        if isinstance(checked, JSONResponse):
            return checked
        merchant, body = checked
        try:
            total = body["amount"]["total"]
            out_trade_no = body["out_trade_no"]
            ip = body["scene_info"]["payer_client_ip"]
            notify_url = body["notify_url"]
            description = body["description"]
        except (ValueError, KeyError, TypeError):
            return error(400, "PARAM_ERROR", "缺少必填参数")
        if body.get("mchid") != merchant.mchid or body.get("appid") != merchant.appid:
            return error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        if not isinstance(total, int) or isinstance(total, bool) or total < 1:
            return error(400, "PARAM_ERROR", "amount.total 应为正整数（分）")
        if not re.fullmatch(r"[0-9A-Za-z_\-|*]{6,32}", str(out_trade_no)):
            return error(400, "PARAM_ERROR", "out_trade_no 格式错误")
        if not str(notify_url).startswith(("https://", "http://")) or not ip or not description:
            return error(400, "PARAM_ERROR", "参数格式错误")
        key = (merchant.mchid, out_trade_no)
        existing = state.orders.get(key)
        if existing is not None:
            if existing["trade_state"] == "SUCCESS":
                return error(403, "ORDERPAID", "该订单已支付")
            if existing["total"] != total or existing["description"] != description:
                return error(400, "INVALID_REQUEST", "201 商户订单号重复")
        else:
            state.orders[key] = {
                "appid": merchant.appid,
                "mchid": merchant.mchid,
                "out_trade_no": out_trade_no,
                "total": total,
                "description": description,
                "notify_url": notify_url,
                "trade_state": "NOTPAY",
            }
        prepay = "wx" + secrets.token_hex(14)
        return signed({"h5_url": f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay}"})

    @app.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
    async def close(out_trade_no: str, request: Request) -> Any:
        checked = await signed_request(request)
        if isinstance(checked, JSONResponse):
            return checked
        merchant, body = checked
        if "mchid" not in body:
            return error(400, "PARAM_ERROR", "缺少必填参数 mchid")
        if body["mchid"] != merchant.mchid:
            return error(400, "MCH_NOT_EXISTS", "商户号不存在")
        order = state.orders.get((merchant.mchid, out_trade_no))
        if order is None:
            return error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order["trade_state"] == "NOTPAY":
            order["trade_state"] = "CLOSED"
        return Response(status_code=204, headers=signature_headers(""))  # a paid order stays paid: the query tells

    @app.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
    async def query(out_trade_no: str, request: Request) -> JSONResponse:
        merchant = authenticate(request, b"")
        if isinstance(merchant, JSONResponse):
            return merchant
        order = state.orders.get((request.query_params.get("mchid", ""), out_trade_no))
        if order is None or order["mchid"] != merchant.mchid:
            return error(404, "ORDER_NOT_EXIST", "订单不存在")
        return signed(transaction(order))

    def refund_view(refund: dict[str, Any]) -> dict[str, Any]:
        return {
            "refund_id": refund["refund_id"],
            "out_refund_no": refund["out_refund_no"],
            "transaction_id": refund["transaction_id"],
            "out_trade_no": refund["out_trade_no"],
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "status": refund["status"],
            "create_time": refund["create_time"],
            "success_time": refund.get("success_time"),
            "amount": {
                "total": refund["total"],
                "refund": refund["refund"],
                "payer_total": refund["total"],
                "payer_refund": refund["refund"],
                "currency": "CNY",
            },
        }

    @app.post("/v3/refund/domestic/refunds")
    async def create_refund(request: Request) -> JSONResponse:
        checked = await signed_request(request)
        if isinstance(checked, JSONResponse):
            return checked
        merchant, body = checked
        try:
            out_refund_no, amount = str(body["out_refund_no"]), body["amount"]
            refund, total, currency = amount["refund"], amount["total"], amount["currency"]
        except (ValueError, KeyError, TypeError):
            return error(400, "PARAM_ERROR", "缺少必填参数")
        order = state.orders.get((merchant.mchid, str(body.get("out_trade_no", ""))))
        if order is None:
            return error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if order["trade_state"] != "SUCCESS":
            return error(403, "TRADE_ERROR", "订单未支付，不能退款")
        if not re.fullmatch(r"[0-9A-Za-z_\-|*@]{1,64}", out_refund_no):
            return error(400, "PARAM_ERROR", "out_refund_no 格式错误")
        if (
            not isinstance(refund, int)
            or isinstance(refund, bool)
            or refund < 1
            or total != order["total"]
            or currency != "CNY"
        ):
            return error(400, "PARAM_ERROR", "退款金额或订单金额错误")
        key = (merchant.mchid, out_refund_no)
        if (existing := state.refunds.get(key)) is not None:
            if existing["refund"] != refund or existing["out_trade_no"] != order["out_trade_no"]:
                return error(400, "INVALID_REQUEST", "同一退款单号的退款金额或订单不一致")
            return signed(refund_view(existing))
        already = sum(
            r["refund"]
            for r in state.refunds.values()
            if r["out_trade_no"] == order["out_trade_no"] and r["status"] != "CLOSED"
        )
        if already + refund > order["total"]:
            return error(400, "INVALID_REQUEST", "退款金额超过订单可退金额")
        entry = {
            "refund_id": "50" + f"{secrets.randbelow(10**27):027d}",
            "out_refund_no": out_refund_no,
            "transaction_id": order["transaction_id"],
            "out_trade_no": order["out_trade_no"],
            "total": total,
            "refund": refund,
            "status": "PROCESSING",
            "mchid": merchant.mchid,
            "notify_url": body.get("notify_url") or order["notify_url"],
            "create_time": datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds"),
        }
        state.refunds[key] = entry
        task = asyncio.create_task(finish_refund(entry, state.refund_outcome.get(order["out_trade_no"], "SUCCESS")))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return signed(refund_view(entry))

    async def finish_refund(refund: dict[str, Any], outcome: str) -> None:
        """The money reaches the payer (or the bank refuses), then WeChat notifies the merchant."""
        await asyncio.sleep(refund_delay)
        refund["status"] = outcome
        if outcome == "SUCCESS":
            refund["success_time"] = datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds")
        resource = {
            "mchid": refund["mchid"],
            "out_trade_no": refund["out_trade_no"],
            "transaction_id": refund["transaction_id"],
            "out_refund_no": refund["out_refund_no"],
            "refund_id": refund["refund_id"],
            "refund_status": outcome,
            "success_time": refund.get("success_time"),
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund["total"],
                "refund": refund["refund"],
                "payer_total": refund["total"],
                "payer_refund": refund["refund"],
            },
        }
        try:
            await post_notification(refund["notify_url"], resource, f"REFUND.{outcome}", "refund", "退款结果")
        except httpx.HTTPError:
            pass  # a lost notification: the merchant's query finds the outcome

    @app.get("/v3/refund/domestic/refunds/{out_refund_no}")
    async def query_refund(out_refund_no: str, request: Request) -> JSONResponse:
        merchant = authenticate(request, b"")
        if isinstance(merchant, JSONResponse):
            return merchant
        refund = state.refunds.get((merchant.mchid, out_refund_no))
        if refund is None:
            return error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return signed(refund_view(refund))

    def bill_rows(day: str) -> list[list[str]]:
        rows: list[list[str]] = []
        blank = dict.fromkeys(BILL_COLUMNS, "")
        for order in state.orders.values():
            if order["trade_state"] == "SUCCESS" and order["success_time"][:10] == day:
                rows.append(
                    list(
                        {
                            **blank,
                            "交易时间": order["success_time"][:19].replace("T", " "),
                            "公众账号ID": order["appid"],
                            "商户号": order["mchid"],
                            "微信订单号": order["transaction_id"],
                            "商户订单号": order["out_trade_no"],
                            "交易类型": "MWEB",
                            "交易状态": "SUCCESS",
                            "付款银行": "OTHERS",
                            "货币种类": "CNY",
                            "应结订单金额": yuan(order["total"]),
                            "代金券金额": "0.00",
                            "商品名称": order["description"],
                            "手续费": "0.00",
                            "费率": "0.60%",
                            "订单金额": yuan(order["total"]),
                        }.values()
                    )
                )
        for refund in state.refunds.values():
            if refund["status"] == "SUCCESS" and (refund.get("success_time") or "")[:10] == day:
                rows.append(
                    list(
                        {
                            **blank,
                            "交易时间": refund["success_time"][:19].replace("T", " "),
                            "商户号": refund["mchid"],
                            "微信订单号": refund["transaction_id"],
                            "商户订单号": refund["out_trade_no"],
                            "交易类型": "MWEB",
                            "交易状态": "REFUND",
                            "货币种类": "CNY",
                            "应结订单金额": "0.00",
                            "微信退款单号": refund["refund_id"],
                            "商户退款单号": refund["out_refund_no"],
                            "退款金额": yuan(refund["refund"]),
                            "退款类型": "ORIGINAL",
                            "退款状态": "SUCCESS",
                            "申请退款金额": yuan(refund["refund"]),
                        }.values()
                    )
                )
        rows += [r for d, r in state.extra_bill_rows if d == day]
        return rows

    def bill_text(day: str) -> bytes:
        rows = bill_rows(day)
        lines = [",".join(BILL_COLUMNS)] + [",".join("`" + v for v in row) for row in rows]
        lines += [BILL_SUMMARY, f"`{len(rows)},`0.00,`0.00,`0.00,`0.00,`0.00,`0.00"]
        return ("\r\n".join(lines) + "\r\n").encode()

    @app.get("/v3/bill/tradebill")
    async def trade_bill(
        request: Request, bill_date: str = "", bill_type: str = "ALL", tar_type: str = ""
    ) -> JSONResponse:
        merchant = authenticate(request, b"")
        if isinstance(merchant, JSONResponse):
            return merchant
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", bill_date) or bill_type not in ("ALL", "SUCCESS", "REFUND"):
            return error(400, "PARAM_ERROR", "bill_date 或 bill_type 参数错误")
        token = secrets.token_urlsafe(12)
        state.bill_tokens[token] = (bill_date, tar_type == "GZIP")
        return signed(
            {
                "hash_type": "SHA1",
                "hash_value": hashlib.sha1(bill_text(bill_date)).hexdigest(),
                "download_url": f"{str(request.base_url).rstrip('/')}/v3/billdownload/file?token={token}",
            }
        )

    @app.get("/v3/billdownload/file")
    async def bill_file(request: Request, token: str = "") -> Any:
        merchant = authenticate(request, b"")
        if isinstance(merchant, JSONResponse):
            return merchant
        if token not in state.bill_tokens:
            return error(400, "PARAM_ERROR", "token 无效或已过期")
        day, gz = state.bill_tokens.pop(token)
        body = bill_text(day)
        return Response(gzip.compress(body) if gz else body, media_type="application/octet-stream")

    @app.post("/_sim/bill-extra/{day}")
    async def bill_extra(day: str, out_trade_no: str, total: int) -> JSONResponse:
        """A trade on WeChat's bill that the merchant never recorded (for reconciliation tests)."""
        blank = dict.fromkeys(BILL_COLUMNS, "")
        state.extra_bill_rows.append(
            (
                day,
                list(
                    {
                        **blank,
                        "交易时间": f"{day} 12:00:00",
                        "商户订单号": out_trade_no,
                        "微信订单号": "42" + secrets.token_hex(8),
                        "交易状态": "SUCCESS",
                        "应结订单金额": yuan(total),
                    }.values()
                ),
            )
        )
        return JSONResponse({"day": day, "out_trade_no": out_trade_no})

    @app.post("/_sim/refund-outcome/{out_trade_no}")
    async def set_refund_outcome(out_trade_no: str, outcome: str = "ABNORMAL") -> JSONResponse:
        """Make refunds of this order end so (ABNORMAL: the payer's card was closed)."""
        state.refund_outcome[out_trade_no] = outcome
        return JSONResponse({"out_trade_no": out_trade_no, "outcome": outcome})

    @app.post("/_sim/pay/{mchid}/{out_trade_no}")
    async def pay(mchid: str, out_trade_no: str, notify: bool = True) -> JSONResponse:
        """The patient pays: WeChat marks the order paid and notifies the merchant (unless
        `notify=false`: the notification is lost, as it can be)."""
        order = state.orders.get((mchid, out_trade_no))
        if order is None:
            return error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order["trade_state"] == "CLOSED":
            return error(400, "ORDER_CLOSED", "订单已关闭")
        if order["trade_state"] != "SUCCESS":
            order.update(
                trade_state="SUCCESS",
                transaction_id="42" + f"{secrets.randbelow(10**26):026d}",
                success_time=datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds"),
            )
        status = await send_notification(order) if notify else None
        return JSONResponse({"notified": status})

    async def send_notification(order: dict[str, Any]) -> int:
        status = await post_notification(
            order["notify_url"], transaction(order), "TRANSACTION.SUCCESS", "transaction", "支付成功"
        )
        state.notifications.append((order["out_trade_no"], status))
        return status

    async def post_notification(
        url: str, resource: dict[str, Any], event_type: str, original_type: str, summary: str
    ) -> int:
        nonce = secrets.token_hex(6)  # 12 characters: the GCM nonce
        plain = json.dumps(resource, ensure_ascii=False).encode()
        cipher = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plain, original_type.encode())
        body = json.dumps(
            {
                "id": secrets.token_hex(18),
                "create_time": datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds"),
                "resource_type": "encrypt-resource",
                "event_type": event_type,
                "summary": summary,
                "resource": {
                    "original_type": original_type,
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(cipher).decode(),
                    "associated_data": original_type,
                    "nonce": nonce,
                },
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        stamp, sig_nonce = str(int(time.time())), secrets.token_hex(16)
        headers = {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": sig_nonce,
            "Wechatpay-Signature": rsa_sign(platform_private_key, f"{stamp}\n{sig_nonce}\n{body}\n"),
            "Wechatpay-Serial": platform_public_key_id,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
            "Content-Type": "application/json",
        }
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, content=body.encode(), headers=headers)
        return response.status_code

    return app


# --- the sandbox merchant --------------------------------------------------------------

SANDBOX_MCHID, SANDBOX_APPID, SANDBOX_SERIAL = "1900000109", "wx8888888888888888", "5157F09EFDC0"
SANDBOX_PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092026"

if __name__ == "__main__":  # python -m simulators.wechat PORT DATA_FOLDER
    keys = sandbox_keys(Path(sys.argv[2]), "wechat")
    sim = wechat_simulator_app(
        [Merchant(mchid=SANDBOX_MCHID, appid=SANDBOX_APPID, serial=SANDBOX_SERIAL, public_key=keys.our_public_key)],
        platform_private_key=keys.their_private_key,
        platform_public_key_id=SANDBOX_PUBLIC_KEY_ID,
        apiv3_key=keys.secret,
    )
    uvicorn.run(sim, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
