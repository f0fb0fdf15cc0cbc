"""A hospital's HIS taking one patient from the card reader to a settled bill, as
docs/integration.md describes it, against a running `make dev`.

    make dev                                  # in one terminal
    python examples/his_walkthrough.py        # in another

It reads a card, enrols the patient (the code from the sandbox's SMS outbox), registers a visit,
sends the patent's figure 1 (exams and back to the doctor, a positive skin test, pharmacy,
infusion, discharge), reads the balance and pays exactly it at the window, printing each step.
Exit status 0 when the visit is settled. Options (or env): --base-url (YHF_BASE_URL), --his-key
(YHF_HIS_API_KEY), --ops-key (YHF_OPS_API_KEY); the defaults are make dev's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

CHINA = ZoneInfo("Asia/Shanghai")


def item(item_id: str, code: str, name: str, category: str, price_fen: int, quantity: int = 1) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "code": code,
        "name": name,
        "category": category,
        "unit_price_fen": price_fen,
        "quantity": quantity,
    }


# The patent's figure 1: the events in the order the guide gives them, with their own fields.
FIGURE_1: list[tuple[str, dict[str, Any]]] = [
    ("checked_in", {"channel": "nurse_station"}),
    ("called", {"room": "3诊室"}),
    ("consultation_started", {}),
    (
        "orders_placed",
        {
            "items": [
                item("xray", "EX-301", "胸部X线", "exam", 12000),
                item("cbc", "LAB-001", "血常规", "lab", 2500),
                item("crp", "LAB-017", "C反应蛋白", "lab", 3000),
            ]
        },
    ),
    ("orders_cancelled", {"item_ids": ["crp"]}),
    ("consultation_ended", {}),  # results pending: awaiting_results
    ("results_ready", {"item_ids": ["xray", "cbc"]}),  # the stage stays awaiting_results
    ("consultation_started", {}),  # back to the doctor with the results
    ("prescribed", {"skin_test_required": True, "items": [item("pen", "DR-110", "青霉素钠", "drug", 4000, 2)]}),
    ("skin_test_result", {"result": "positive"}),  # back to the doctor, consultation open
    ("orders_cancelled", {"item_ids": ["pen"]}),
    (
        "prescribed",
        {
            "skin_test_required": False,
            "items": [
                item("azi", "DR-205", "阿奇霉素片", "drug", 3500),
                item("drip", "IV-002", "静脉输液", "infusion", 6000),
            ],
        },
    ),
    ("consultation_ended", {}),
    ("dispensed", {}),
    ("infusion_started", {}),
    ("infusion_finished", {}),
    ("discharged", {}),
]


class Failed(Exception):
    """An answer the walk did not expect."""


class His:
    """The hospital's side: each call printed with its answer's status and what matters in it."""

    def __init__(self, http: httpx.Client, his_key: str, ops_key: str) -> None:
        self.http = http
        self.his = {"Authorization": f"Bearer {his_key}"}
        self.ops = {"Authorization": f"Bearer {ops_key}"}

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        r = self.http.request(method, path, json=body, headers=headers or {})
        print(f"{method:4} {path} -> {r.status_code}")
        if r.status_code not in expect:
            raise Failed(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()


def now() -> str:
    """This moment in China time, with its offset, as a HIS sends `occurred_at`."""
    return datetime.now(CHINA).isoformat(timespec="seconds")


def enrolled_patient(his: His) -> str:
    """A card read at the kiosk, a code to the patient's phone, the enrolment."""
    card = {
        "card_type": "insurance_card",
        "card_no": f"SI{secrets.token_hex(5)}",
        "name": "张三",
        "insured_locally": True,
    }
    patient = his.call("POST", "/v1/his/patients", body=card, headers=his.his)
    patient_id: str = patient["patient_id"]
    print(f"     patient {patient_id}, enrolled: {patient['enrolled']}, service: {patient['service_status']}")
    phone = "139" + f"{secrets.randbelow(10**8):08d}"
    his.call("POST", f"/v1/his/patients/{patient_id}/sms-code", body={"phone": phone}, headers=his.his)
    outbox = his.call("GET", f"/v1/sandbox/sms?phone={phone}")
    code = [m["params"]["code"] for m in outbox if m["template"] == "verification_code"][-1]
    print("     the code read from the sandbox's SMS outbox")
    enrolment = {"agreement_version": "2026-01", "phone": phone, "code": code}
    his.call("POST", f"/v1/his/patients/{patient_id}/enrollment", body=enrolment, headers=his.his)
    return patient_id


def clinical_path(his: His, visit_id: str) -> dict[str, Any]:
    """Figure 1, one event after another; the visit after the discharge."""
    visit: dict[str, Any] = {}
    for n, (type_, fields) in enumerate(FIGURE_1, start=1):
        event = {"event_id": f"e{n:02d}", "type": type_, "occurred_at": now(), **fields}
        visit = his.call("POST", f"/v1/his/visits/{visit_id}/events", body=event, headers=his.his)
        bill = visit["bill"]
        print(f"     {type_:22} stage {visit['stage']:17} billed {bill['total_fen']:6} fen")
    return visit


def pay_at_window(his: His, patient_id: str, visit_id: str) -> dict[str, Any]:
    """Reads what is owed and takes exactly that at the window."""
    visit = his.call("GET", f"/v1/his/visits/{visit_id}", headers=his.his)
    balance = visit["bill"]["balance_fen"]
    print(f"     {visit['payment_status']}: balance {balance} fen (¥{balance / 100:.2f}), due at {visit['due_at']}")
    payment = {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": balance, "method": "cash"}
    key = {"Idempotency-Key": f"window-{visit_id}"}
    paid = his.call("POST", "/v1/ops/payments", body=payment, headers={**his.ops, **key})
    print(f"     payment {paid['payment_id']}: {paid['amount_fen']} fen, {paid['status']}")
    after: dict[str, Any] = his.call("GET", f"/v1/his/visits/{visit_id}", headers=his.his)
    print(f"     visit {visit_id}: {after['payment_status']}, balance {after['bill']['balance_fen']} fen")
    return after


def walk(base_url: str, his_key: str, ops_key: str) -> dict[str, Any]:
    """The whole walk; the visit at the end."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        his = His(http, his_key, ops_key)
        print("1. the card, the enrolment")
        patient_id = enrolled_patient(his)
        print("2. registration (挂号)")
        visit_id = f"WALK-{secrets.token_hex(4)}"
        registration = {
            "visit_id": visit_id,
            "patient_id": patient_id,
            "department": "呼吸内科",
            "channel": "kiosk",
            "registration_fee_fen": 500,
        }
        visit = his.call("POST", "/v1/his/visits", body=registration, headers=his.his)
        print(f"     visit {visit_id}: stage {visit['stage']}, billed {visit['bill']['total_fen']} fen")
        print("3. the clinical path (figure 1)")
        clinical_path(his, visit_id)
        print("4. the bill, paid at the window")
        return pay_at_window(his, patient_id, visit_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", default=os.environ.get("YHF_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--his-key", default=os.environ.get("YHF_HIS_API_KEY", "dev-his-key"))
    parser.add_argument("--ops-key", default=os.environ.get("YHF_OPS_API_KEY", "dev-ops-key"))
    args = parser.parse_args(argv)
    try:
        visit = walk(args.base_url, args.his_key, args.ops_key)
    except (Failed, httpx.HTTPError) as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    settled = visit["payment_status"] == "settled"
    print("done: the visit is settled" if settled else f"not settled: {visit['payment_status']}")
    return 0 if settled else 1


if __name__ == "__main__":
    sys.exit(main())
