"""The parts of docs/integration.md that come from the code, so the guide cannot drift:
the visit's state diagram (from domain/visit.py: ALLOWED and `apply`) and the table of each
event's fields (from api/schemas/his.py: EVENT_FIELDS, REQUIRED_FIELDS).

`python -m tests.guide` rewrites them between their markers; tests/test_docs.py fails while
the committed guide differs from what this module makes."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

from api.schemas.his import EVENT_FIELDS, REQUIRED_FIELDS
from domain.visit import ALLOWED, Category, Event, EventType, Item, Refusal, Stage, VisitState, apply

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
E = EventType


def _item(state: VisitState, category: Category) -> Item:
    n = len(state.active_items) + len(state.cancelled_items)
    return Item(item_id=f"i{n}", code="C", name="x", category=category, unit_price_fen=100, quantity=1)


def _events(state: VisitState) -> list[Event]:
    """Every kind of event the HIS may send, with items that fit `state` (one of each shape)."""
    simple = [E.checked_in, E.called, E.consultation_started, E.consultation_ended, E.dispensed]
    simple += [E.infusion_started, E.infusion_finished, E.discharged]
    events = [Event(type=t) for t in simple]
    for category in (Category.exam, Category.treatment):
        events.append(Event(type=E.orders_placed, items=(_item(state, category),)))
    for category in (Category.drug, Category.infusion):
        for skin in (False, True):
            events.append(Event(type=E.prescribed, items=(_item(state, category),), skin_test_required=skin))
    if state.pending_results:
        events.append(Event(type=E.results_ready, item_ids=tuple(sorted(state.pending_results))))
    for item_id in sorted(state.active_items):
        events.append(Event(type=E.orders_cancelled, item_ids=(item_id,)))
    events += [Event(type=E.skin_test_result, skin_test_positive=p) for p in (True, False)]
    return events


def _shape(state: VisitState) -> tuple[object, ...]:
    return (
        state.stage,
        state.consultation_open,
        bool(state.pending_results),
        frozenset(state.active_items.values()),
        state.infusion_prescribed,
        state.infusion_done,
    )


def edges() -> dict[tuple[Stage, Stage], list[EventType]]:
    """(stage before, stage after) -> the event types that make that step, found by walking
    `apply` from a new visit through every state it can reach."""
    found: dict[tuple[Stage, Stage], list[EventType]] = {}
    start = VisitState()
    seen = {_shape(start)}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for event in _events(state):
            result = apply(state, event)
            if isinstance(result, Refusal):
                continue
            types = found.setdefault((state.stage, result.state.stage), [])
            if event.type not in types:
                types.append(event.type)
            if _shape(result.state) not in seen:
                seen.add(_shape(result.state))
                todo.append(result.state)
    order = list(EventType)
    return {k: sorted(v, key=order.index) for k, v in found.items()}


def diagram() -> str:
    """The visit's stages and the events that move it, as a Mermaid state diagram."""
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {Stage.registered}: POST /v1/his/visits"]
    stages = list(Stage)
    for (a, b), types in sorted(edges().items(), key=lambda kv: (stages.index(kv[0][0]), stages.index(kv[0][1]))):
        lines.append(f"    {a} --> {b}: {', '.join(types)}")
    lines += [f"    {Stage.discharged} --> [*]", "```"]
    return "\n".join(lines)


def allowed_table() -> str:
    """Which event types each stage accepts (ALLOWED), before the finer conditions."""
    rows = ["| stage | accepts |", "| --- | --- |"]
    rows += [f"| `{stage}` | {', '.join(f'`{t}`' for t in types)} |" for stage, types in ALLOWED.items()]
    return "\n".join(rows)


def _names(fields: list[str]) -> str:
    return ", ".join(f"`{f}`" for f in fields) or "-"


def fields_table() -> str:
    """Each event type's own fields beside `event_id`, `type` and `occurred_at`."""
    rows = ["| `type` | required fields | optional fields |", "| --- | --- | --- |"]
    for t in EventType:
        required = sorted(REQUIRED_FIELDS.get(t, set()))
        optional = sorted(EVENT_FIELDS.get(t, set()) - set(required))
        rows.append(f"| `{t}` | {_names(required)} | {_names(optional)} |")
    return "\n".join(rows)


PARTS = {"diagram": diagram, "allowed": allowed_table, "fields": fields_table}


def render(text: str) -> str:
    """`text` with each generated part replaced between `<!-- gen:NAME -->` and `<!-- /gen:NAME -->`."""
    for name, make in PARTS.items():
        found = re.search(rf"(<!-- gen:{name} -->\n).*?(\n<!-- /gen:{name} -->)", text, re.DOTALL)
        if not found:
            raise ValueError(f"the guide has no <!-- gen:{name} --> block")
        text = text[: found.end(1)] + make() + text[found.start(2) :]
    return text


def main() -> None:
    GUIDE.write_text(render(GUIDE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {GUIDE}")


if __name__ == "__main__":
    main()
