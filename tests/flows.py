"""The clinic's side of a visit, spoken through the HTTP contract. Shared by the API
tests (over ASGI) and the end-to-end tests (over a socket)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from tests.support import uid


def random_phone() -> str:
    return "139" + f"{secrets.randbelow(10**8):08d}"


def random_id_number() -> str:
    return "110101" + "19900101" + f"{secrets.randbelow(10**3):03d}" + "X"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def item(item_id: str, category: str, price: int, qty: int = 1, name: str | None = None) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "code": f"C-{item_id}",
        "name": name or f"项目{item_id}",
        "category": category,
        "unit_price_fen": price,
        "quantity": qty,
    }


# the figure-1 walk the benchmarks' visits take: one lab and one exam, results, a drug
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("checked_in", {"channel": "app"}),
    ("called", {}),
    ("consultation_started", {}),
    ("orders_placed", {"items": [item("lab", "lab", 2500), item("ct", "exam", 20000)]}),
    ("consultation_ended", {}),
    ("results_ready", {"item_ids": ["lab", "ct"]}),
    ("consultation_started", {}),
    ("prescribed", {"items": [item("d", "drug", 3000)]}),
    ("consultation_ended", {}),
    ("dispensed", {}),
    ("discharged", {}),
]


class Clinic:
    """Drives one hospital's HIS against the API: `post(path, body, headers)` and `get(path, headers)`
    are coroutines returning httpx responses."""

    def __init__(self, post, get, his_headers: dict[str, str]) -> None:
        self.post, self.get, self.his = post, get, his_headers

    @classmethod
    def over(cls, http: Any, his_headers: dict[str, str]) -> Clinic:
        """A clinic speaking through an httpx.AsyncClient (over ASGI or a socket)."""

        async def post(path: str, body: Any, headers: dict[str, str]) -> Any:
            return await http.post(path, json=body, headers=headers)

        async def get(path: str, headers: dict[str, str]) -> Any:
            return await http.get(path, headers=headers)

        return cls(post, get, his_headers)

    async def read_card(self, *, insured: bool = True, phone: str | None = None, id_number: str | None = None) -> str:
        body = {"card_type": "insurance_card", "card_no": uid("SI"), "name": "李小龙", "insured_locally": insured}
        if id_number:
            body["id_number"] = id_number
        r = await self.post("/v1/his/patients", body, self.his)
        assert r.status_code == 201, r.text
        return r.json()["patient_id"]

    async def last_code(self, phone: str) -> str:
        r = await self.get(f"/v1/sandbox/sms?phone={phone}", {})
        assert r.status_code == 200, r.text
        codes = [m["params"]["code"] for m in r.json() if m["template"] == "verification_code"]
        assert codes, r.json()
        return codes[-1]

    async def enrol(self, patient_id: str, phone: str) -> None:
        r = await self.post(f"/v1/his/patients/{patient_id}/sms-code", {"phone": phone}, self.his)
        assert r.status_code == 202, r.text
        code = await self.last_code(phone)
        r = await self.post(
            f"/v1/his/patients/{patient_id}/enrollment",
            {"agreement_version": "2026-01", "phone": phone, "code": code},
            self.his,
        )
        assert r.status_code == 201, r.text

    async def enrolled_patient(self) -> tuple[str, str]:
        phone = random_phone()
        patient_id = await self.read_card()
        await self.enrol(patient_id, phone)
        return patient_id, phone

    async def register(self, patient_id: str, fee: int = 500) -> dict[str, Any]:
        r = await self.post(
            "/v1/his/visits",
            {
                "visit_id": uid("V"),
                "patient_id": patient_id,
                "department": "呼吸内科",
                "channel": "kiosk",
                "registration_fee_fen": fee,
            },
            self.his,
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def event(self, visit_id: str, type_: str, expect: int = 200, **fields: Any) -> dict[str, Any]:
        body = {"event_id": uid("ev"), "type": type_, "occurred_at": now_iso(), **fields}
        r = await self.post(f"/v1/his/visits/{visit_id}/events", body, self.his)
        assert r.status_code == expect, r.text
        return r.json()

    async def figure_1(self, visit_id: str) -> dict[str, Any]:
        """The patent's figure 1: exams and results, a positive skin test and a second
        prescription, a cancelled order, pharmacy, infusion, discharge."""
        await self.event(visit_id, "checked_in", channel="app")
        await self.event(visit_id, "called", room="3诊室")
        await self.event(visit_id, "consultation_started")
        await self.event(
            visit_id,
            "orders_placed",
            items=[item("xray", "exam", 12000), item("cbc", "lab", 2500), item("crp", "lab", 3000)],
        )
        await self.event(visit_id, "orders_cancelled", item_ids=["crp"])
        await self.event(visit_id, "consultation_ended")
        await self.event(visit_id, "results_ready", item_ids=["xray", "cbc"])
        await self.event(visit_id, "consultation_started")
        await self.event(visit_id, "prescribed", items=[item("pen", "drug", 4000, 2)], skin_test_required=True)
        await self.event(visit_id, "skin_test_result", result="positive")
        await self.event(visit_id, "orders_cancelled", item_ids=["pen"])
        await self.event(
            visit_id,
            "prescribed",
            items=[item("azi", "drug", 3500), item("drip", "infusion", 6000)],
            skin_test_required=False,
        )
        await self.event(visit_id, "consultation_ended")
        await self.event(visit_id, "dispensed")
        await self.event(visit_id, "infusion_started")
        await self.event(visit_id, "infusion_finished")
        return await self.event(visit_id, "discharged")

    # registration 500 + xray 12000 + cbc 2500 + azi 3500 + drip 6000
    FIGURE_1_TOTAL = 24500


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    """An application/problem+json answer with this status and stable code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["title"] and body["detail"]
    return body
