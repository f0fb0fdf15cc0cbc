"""The integrator's guide cannot drift from the code: its generated parts are what the code
gives today, its event examples are accepted in order by the real API, and its links lead
somewhere."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from domain.visit import EventType
from tests.flows import Clinic, assert_problem
from tests.guide import GUIDE, diagram, render

DOCS = GUIDE.parent


def event_examples() -> list[dict[str, Any]]:
    """The guide's ```json event blocks, in order."""
    blocks = re.findall(r"```json event\n(.*?)\n```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    return [json.loads(b) for b in blocks]


def test_generated_parts_are_what_the_code_gives() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert render(text) == text, "docs/integration.md is stale: run `python -m tests.guide` and commit it"


def test_diagram_has_every_stage_and_event() -> None:
    from domain.visit import Stage

    made = diagram()
    assert all(re.search(rf"\b{s}\b", made) for s in Stage)
    assert all(re.search(rf"\b{t}\b", made) for t in EventType)
    # the rule nobody could guess: results_ready keeps the stage
    assert "awaiting_results --> awaiting_results: orders_placed, orders_cancelled, results_ready" in made


def test_render_replaces_a_stale_part() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    stale = text.replace("checked_in --> called: called", "checked_in --> called: calld")
    assert stale != text and render(stale) == text


def test_examples_cover_every_event_type_with_distinct_ids() -> None:
    examples = event_examples()
    assert {e["type"] for e in examples} == set(EventType)
    assert len({e["event_id"] for e in examples}) == len(examples)


def slugs(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_lead_to_files_and_sections() -> None:
    for page in (GUIDE, DOCS / "api.md"):
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", text):
            if target.startswith("http"):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name} links to missing {target}"
            if anchor:
                assert anchor in slugs(path), f"{page.name}: {target} has no section #{anchor}"


async def test_every_example_is_accepted_in_order_and_the_balance_paid(api) -> None:
    """The guide's figure-1 walk over ASGI: each example 200, the bill the guide states, then a
    window payment of exactly the balance settles the visit."""
    clinic = Clinic.over(api.http, api.his)
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    visit: dict[str, Any] = {}
    for example in event_examples():
        r = await api.his_post(f"/v1/his/visits/{visit_id}/events", example)
        assert r.status_code == 200, (example["event_id"], r.text)
        visit = r.json()
    assert visit["stage"] == "discharged" and visit["payment_status"] == "due"
    assert visit["bill"]["balance_fen"] == 24500 and "**24500 fen**" in GUIDE.read_text(encoding="utf-8")
    assert visit["unperformed_items"] == []
    again = await api.his_post(f"/v1/his/visits/{visit_id}/events", event_examples()[-1])
    assert again.status_code == 200 and again.json()["bill"] == visit["bill"]  # a retry is answered, not re-booked
    body = {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": visit["bill"]["balance_fen"]}
    more = {**body, "amount_fen": body["amount_fen"] + 1, "method": "cash"}
    assert_problem(await api.ops_post("/v1/ops/payments", more), 409, "amount_exceeds_balance")
    paid = await api.ops_post(
        "/v1/ops/payments", {**body, "method": "cash"}, headers={"Idempotency-Key": f"w-{visit_id}"}
    )
    assert paid.status_code == 201, paid.text
    after = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert after["payment_status"] == "settled" and after["bill"]["balance_fen"] == 0


def test_the_walkthrough_sends_the_guides_events() -> None:
    """examples/his_walkthrough.py walks the same path, with the same fields, as the guide."""
    spec = importlib.util.spec_from_file_location("his_walkthrough", DOCS.parent / "examples" / "his_walkthrough.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    guide = [{k: v for k, v in e.items() if k not in ("event_id", "occurred_at")} for e in event_examples()]
    assert [{"type": t, **fields} for t, fields in script.FIGURE_1] == guide


def test_api_page_links_the_running_docs() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    assert "/docs" in text and "/openapi.json" in text
    assert Path(DOCS.parent / "examples" / "his_walkthrough.py").exists()


async def test_the_times_rule_the_guide_states(api) -> None:
    """Section 6: `occurred_at` is kept as sent; the payment clock starts at the discharge's time
    clamped to no earlier than the registration and no later than its acceptance."""
    clinic = Clinic.over(api.http, api.his)
    patient_id, _ = await clinic.enrolled_patient()
    for sent in (datetime(2020, 1, 1, 9, tzinfo=UTC), datetime.now(UTC) + timedelta(days=2)):
        visit_id = (await clinic.register(patient_id))["visit_id"]
        before = datetime.now(UTC)
        body = {"event_id": "out", "type": "discharged", "occurred_at": sent.isoformat()}
        r = await api.his_post(f"/v1/his/visits/{visit_id}/events", body)
        assert r.status_code == 200, r.text
        visit = r.json()
        assert datetime.fromisoformat(visit["discharged_at"]) == sent  # as sent
        assert visit["events"][0]["occurred_at"] == visit["discharged_at"]
        clock = datetime.fromisoformat(visit["due_at"]) - timedelta(days=7)  # YHF_DEFAULT_AFTER P7D
        assert before - timedelta(seconds=30) <= clock <= datetime.now(UTC), (sent, visit["due_at"])
        paid = {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": 500, "method": "cash"}
        assert (await api.ops_post("/v1/ops/payments", paid)).status_code == 201  # in normal service again
