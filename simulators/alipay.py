"""Alipay's gateway, simulated: the other side of `integrations.payments.alipay`, for dev and
tests. It checks what Alipay checks and keeps its state in memory.

The simulator verifies the app's RSA2 signature over the sorted parameters, answers queries
signed with Alipay's key, and on `/_sim/pay` posts a signed form notification to the
order's notify_url, as Alipay does; it expects the body `success` back.

`python -m simulators.alipay PORT DATA_FOLDER` serves it for the sandbox app, with the keys
of `simulators.keys.sandbox_keys` (devstack starts it)."""

from __future__ import annotations

import io
import json
import secrets
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from domain.money import fen_from_yuan, yuan
from integrations.payments.alipay import BILL_COLUMNS
from simulators.keys import rsa_sign, rsa_verify, sandbox_keys


def unsigned_string(params: dict[str, str], *, request: bool = False) -> str:
    """What is signed: the parameters sorted, k=v joined by &, without `sign` — and, in
    Alipay's notifications (not in requests to it), without `sign_type`."""
    skip = ("sign",) if request else ("sign", "sign_type")
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in skip and v != "")


@dataclass
class AlipaySimState:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: list[tuple[str, str]] = field(default_factory=list)  # (out_trade_no, our answer)
    bill_tokens: dict[str, str] = field(default_factory=dict)  # download token -> day
    closed: set[str] = field(default_factory=set)  # out_trade_no closed by the merchant
    extra_bill_rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def alipay_simulator_app(*, app_id: str, seller_id: str, app_public_key: str, alipay_private_key: str) -> FastAPI:
    app = FastAPI(title="Alipay gateway (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    state = AlipaySimState()
    app.state.alipay = state

    def signed(name: str, body: dict[str, Any]) -> JSONResponse:
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        text = f'{{"{name}":{raw},"sign":"{rsa_sign(alipay_private_key, raw)}"}}'
        return JSONResponse(content=json.loads(text))

    @app.api_route("/gateway.do", methods=["GET", "POST"])
    async def gateway(request: Request) -> Any:
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        method = params.get("method", "")
        name = method.replace(".", "_") + "_response"
        if params.get("app_id") != app_id:
            return signed(
                name,
                {
                    "code": "40002",
                    "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-app-id",
                    "sub_msg": "无效的AppID参数",
                },
            )
        if params.get("sign_type") != "RSA2" or not rsa_verify(
            app_public_key, unsigned_string(params, request=True), params.get("sign", "")
        ):
            return signed(
                name,
                {
                    "code": "40002",
                    "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-signature",
                    "sub_msg": "验签出错",
                },
            )
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            return signed(
                name,
                {
                    "code": "40002",
                    "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-biz-content",
                    "sub_msg": "biz_content 不是合法的 JSON",
                },
            )
        if method == "alipay.trade.wap.pay":
            fen = fen_from_yuan(str(biz.get("total_amount")))
            no = str(biz.get("out_trade_no", ""))
            if fen is None or fen < 1 or not no or not biz.get("subject") or not params.get("notify_url"):
                return HTMLResponse("<h1>参数错误</h1>", status_code=400)
            if no in state.closed:
                return HTMLResponse("<h1>交易已关闭</h1>", status_code=400)
            order: dict[str, Any] | None = state.orders.setdefault(
                no,
                {
                    "out_trade_no": no,
                    "total_fen": fen,
                    "subject": biz["subject"],
                    "notify_url": params["notify_url"],
                    "trade_status": "WAIT_BUYER_PAY",
                },
            )
            assert order is not None  # just set
            if order["total_fen"] != fen:
                return HTMLResponse("<h1>交易信息被篡改</h1>", status_code=400)
            return HTMLResponse(f"<h1>支付宝收银台（模拟）</h1><p>{order['subject']}：¥{yuan(fen)}</p>")
        if method == "alipay.trade.query":
            order = state.orders.get(str(biz.get("out_trade_no", "")))
            if order is None:
                return signed(
                    name,
                    {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "ACQ.TRADE_NOT_EXIST",
                        "sub_msg": "交易不存在",
                    },
                )
            return signed(
                name,
                {
                    "code": "10000",
                    "msg": "Success",
                    "out_trade_no": order["out_trade_no"],
                    "trade_no": order.get("trade_no", ""),
                    "trade_status": order["trade_status"],
                    "total_amount": yuan(order["total_fen"]),
                },
            )
        if method == "alipay.data.dataservice.bill.downloadurl.query":
            day = str(biz.get("bill_date", ""))
            if biz.get("bill_type") not in ("trade", "signcustomer") or len(day) != 10:
                return signed(
                    name,
                    {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "isp.bill_not_exist",
                        "sub_msg": "账单不存在",
                    },
                )
            token = secrets.token_urlsafe(12)
            state.bill_tokens[token] = day
            base = str(request.base_url).rstrip("/")
            return signed(
                name, {"code": "10000", "msg": "Success", "bill_download_url": f"{base}/_bills/download?token={token}"}
            )
        if method == "alipay.trade.refund":
            return signed(name, refund(biz))
        if method == "alipay.trade.close":
            no = str(biz.get("out_trade_no", ""))
            order = state.orders.get(no)
            state.closed.add(no)  # a cashier opened after the close cannot pay it
            if order is None:
                return signed(
                    name,
                    {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "ACQ.TRADE_NOT_EXIST",
                        "sub_msg": "交易不存在",
                    },
                )
            if order["trade_status"] != "WAIT_BUYER_PAY":
                return signed(
                    name,
                    {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "ACQ.TRADE_STATUS_ERROR",
                        "sub_msg": "交易状态不合法",
                    },
                )
            order["trade_status"] = "TRADE_CLOSED"
            return signed(
                name, {"code": "10000", "msg": "Success", "out_trade_no": no, "trade_no": order.get("trade_no", "")}
            )
        if method == "alipay.trade.fastpay.refund.query":
            order = state.orders.get(str(biz.get("out_trade_no", "")))
            if order is None:
                return signed(
                    name,
                    {
                        "code": "40004",
                        "msg": "Business Failed",
                        "sub_code": "ACQ.TRADE_NOT_EXIST",
                        "sub_msg": "交易不存在",
                    },
                )
            done = order.setdefault("refunds", {}).get(str(biz.get("out_request_no", "")))
            if done is None:  # Alipay answers success with no refund fields: no such refund
                return signed(name, {"code": "10000", "msg": "Success"})
            return signed(
                name,
                {
                    "code": "10000",
                    "msg": "Success",
                    "out_trade_no": order["out_trade_no"],
                    "trade_no": order["trade_no"],
                    "out_request_no": biz["out_request_no"],
                    "total_amount": yuan(order["total_fen"]),
                    "refund_amount": yuan(done),
                    "refund_status": "REFUND_SUCCESS",
                },
            )
        return signed(
            name,
            {"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method", "sub_msg": "不存在的方法名"},
        )

    def refund(biz: dict[str, Any]) -> dict[str, Any]:
        def failed(sub_code: str, sub_msg: str) -> dict[str, Any]:
            return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}

        order = state.orders.get(str(biz.get("out_trade_no", "")))
        if order is None:
            return failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
        if order["trade_status"] != "TRADE_SUCCESS":
            return failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        fen = fen_from_yuan(str(biz.get("refund_amount")))
        if fen is None or fen < 1:
            return {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-parameter",
                "sub_msg": "refund_amount 不合法",
            }
        request_no = str(biz.get("out_request_no") or order["out_trade_no"])
        refunds: dict[str, int] = order.setdefault("refunds", {})
        fund_change = "N"
        if request_no in refunds:
            if refunds[request_no] != fen:
                return failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "同一退款请求号的退款金额不一致")
        else:
            if sum(refunds.values()) + fen > order["total_fen"]:
                return failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            refunds[request_no] = fen
            fund_change = "Y"
            order.setdefault("refund_log", []).append(
                (request_no, fen, datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S"))
            )
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": order["trade_no"],
            "out_trade_no": order["out_trade_no"],
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": yuan(sum(refunds.values())),
            "gmt_refund_pay": datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S"),
        }

    @app.get("/_bills/download")
    async def bill_download(token: str = "") -> Any:
        day = state.bill_tokens.pop(token, None)
        if day is None:
            return JSONResponse({"error": "token expired"}, status_code=404)
        rows = []
        for order in state.orders.values():
            if order.get("gmt_payment", "")[:10] == day:
                rows.append(
                    {
                        "支付宝交易号": order["trade_no"],
                        "商户订单号": order["out_trade_no"],
                        "业务类型": "交易",
                        "商品名称": order["subject"],
                        "完成时间": order["gmt_payment"],
                        "订单金额（元）": yuan(order["total_fen"]),
                        "商家实收（元）": yuan(order["total_fen"]),
                    }
                )
            for request_no, fen, at in order.get("refund_log", []):
                if at[:10] == day:
                    rows.append(
                        {
                            "支付宝交易号": order["trade_no"],
                            "商户订单号": order["out_trade_no"],
                            "业务类型": "退款",
                            "商品名称": order["subject"],
                            "完成时间": at,
                            "订单金额（元）": "-" + yuan(fen),
                            "退款批次号/请求号": request_no,
                        }
                    )
        rows += [r for d, r in state.extra_bill_rows if d == day]
        lines = [
            "#支付宝业务明细查询",
            f"#账号：[{seller_id}]",
            f"#起始日期：[{day} 00:00:00]",
            ",".join(BILL_COLUMNS),
        ] + [",".join(r.get(c, "") for c in BILL_COLUMNS) for r in rows]
        lines += ["#-----------------------------------------业务明细列表结束------------------------------------"]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr(f"{seller_id}0156_{day.replace('-', '')}_业务明细.csv", "\r\n".join(lines).encode("gbk"))
            archive.writestr(f"{seller_id}0156_{day.replace('-', '')}_业务明细(汇总).csv", "#汇总\r\n".encode("gbk"))
        return Response(buf.getvalue(), media_type="application/zip")

    @app.post("/_sim/bill-extra/{day}")
    async def bill_extra(day: str, out_trade_no: str, total: int) -> JSONResponse:
        """A trade on Alipay's bill that the merchant never recorded (for reconciliation tests)."""
        state.extra_bill_rows.append(
            (
                day,
                {
                    "支付宝交易号": "2026" + secrets.token_hex(8),
                    "商户订单号": out_trade_no,
                    "业务类型": "交易",
                    "完成时间": f"{day} 12:00:00",
                    "订单金额（元）": yuan(total),
                },
            )
        )
        return JSONResponse({"day": day, "out_trade_no": out_trade_no})

    @app.post("/_sim/pay/{out_trade_no}")
    async def pay(out_trade_no: str, notify: bool = True) -> JSONResponse:
        order = state.orders.get(out_trade_no)
        if order is None:
            return JSONResponse({"error": "ACQ.TRADE_NOT_EXIST"}, status_code=404)
        if order["trade_status"] == "TRADE_CLOSED":
            return JSONResponse({"error": "ACQ.TRADE_HAS_CLOSE"}, status_code=400)
        if order["trade_status"] != "TRADE_SUCCESS":
            order.update(
                trade_status="TRADE_SUCCESS",
                trade_no=datetime.now().strftime("%Y%m%d") + "2200" + f"{secrets.randbelow(10**14):014d}",
                gmt_payment=datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S"),
            )
        if not notify:
            return JSONResponse({"notified": None})
        form = {
            "notify_time": order["gmt_payment"],
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "charset": "utf-8",
            "version": "1.0",
            "app_id": app_id,
            "seller_id": seller_id,
            "trade_no": order["trade_no"],
            "out_trade_no": out_trade_no,
            "total_amount": yuan(order["total_fen"]),
            "receipt_amount": yuan(order["total_fen"]),
            "trade_status": "TRADE_SUCCESS",
            "gmt_payment": order["gmt_payment"],
            "subject": order["subject"],
            "sign_type": "RSA2",
        }
        form["sign"] = rsa_sign(alipay_private_key, unsigned_string(form))
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(order["notify_url"], data=form)
        state.notifications.append((out_trade_no, r.text))
        return JSONResponse({"notified": r.text})

    return app


# --- the sandbox app -----------------------------------------------------------------

SANDBOX_APP_ID, SANDBOX_SELLER_ID = "2021000000000001", "2088000000000001"


if __name__ == "__main__":  # python -m simulators.alipay PORT DATA_FOLDER
    keys = sandbox_keys(Path(sys.argv[2]), "alipay")
    uvicorn.run(
        alipay_simulator_app(
            app_id=SANDBOX_APP_ID,
            seller_id=SANDBOX_SELLER_ID,
            app_public_key=keys.our_public_key,
            alipay_private_key=keys.their_private_key,
        ),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
    )
