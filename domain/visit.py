"""The outpatient visit as a state machine (the patent's figure 1).

`apply(state, event)` returns the next state and what to book, or a Refusal that says
why the event does not fit where the visit is. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from domain.money import is_valid_amount


class Stage(StrEnum):
    registered = "registered"
    checked_in = "checked_in"
    called = "called"
    in_consultation = "in_consultation"
    awaiting_results = "awaiting_results"
    prescribed = "prescribed"
    skin_test = "skin_test"
    dispensed = "dispensed"
    in_infusion = "in_infusion"
    discharged = "discharged"


class EventType(StrEnum):
    checked_in = "checked_in"
    called = "called"
    consultation_started = "consultation_started"
    consultation_ended = "consultation_ended"
    orders_placed = "orders_placed"
    orders_cancelled = "orders_cancelled"
    results_ready = "results_ready"
    prescribed = "prescribed"
    skin_test_result = "skin_test_result"
    dispensed = "dispensed"
    infusion_started = "infusion_started"
    infusion_finished = "infusion_finished"
    discharged = "discharged"


class Category(StrEnum):
    exam = "exam"
    lab = "lab"
    treatment = "treatment"
    drug = "drug"
    infusion = "infusion"
    material = "material"
    other = "other"


# Orders of these categories produce a report the patient takes back to the doctor.
RESULT_CATEGORIES = frozenset({Category.exam, Category.lab})


class RefusalCode(StrEnum):
    invalid_transition = "invalid_transition"
    unknown_item = "unknown_item"
    duplicate_item = "duplicate_item"
    invalid_item = "invalid_item"


@dataclass(frozen=True, kw_only=True)
class Item:
    item_id: str
    code: str
    name: str
    category: Category
    unit_price_fen: int
    quantity: int

    @property
    def amount_fen(self) -> int:
        return self.unit_price_fen * self.quantity


@dataclass(frozen=True, kw_only=True)
class Event:
    type: EventType
    items: tuple[Item, ...] = ()
    item_ids: tuple[str, ...] = ()
    skin_test_required: bool = False
    skin_test_positive: bool | None = None


@dataclass(frozen=True, kw_only=True)
class VisitState:
    stage: Stage = Stage.registered
    consultation_open: bool = False
    # item_id -> category, for every item ever charged and not cancelled
    active_items: dict[str, Category] = field(default_factory=dict)
    cancelled_items: frozenset[str] = frozenset()
    pending_results: frozenset[str] = frozenset()
    infusion_prescribed: bool = False
    infusion_done: bool = False


@dataclass(frozen=True, kw_only=True)
class Transition:
    state: VisitState
    charge: tuple[Item, ...] = ()
    reverse: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Refusal:
    code: RefusalCode
    stage: Stage
    detail: str
    allowed: tuple[EventType, ...] = ()


E = EventType
S = Stage

# Which events each stage accepts. The handlers below add the finer conditions
# (open consultation, known items, pending infusion).
ALLOWED: dict[Stage, tuple[EventType, ...]] = {
    S.registered: (E.checked_in, E.orders_cancelled, E.discharged),
    S.checked_in: (E.called, E.orders_cancelled, E.discharged),
    S.called: (E.called, E.consultation_started, E.orders_cancelled, E.discharged),
    S.in_consultation: (
        E.orders_placed,
        E.orders_cancelled,
        E.prescribed,
        E.consultation_ended,
        E.consultation_started,
        E.discharged,
    ),
    S.awaiting_results: (
        E.results_ready,
        E.orders_placed,
        E.orders_cancelled,
        E.consultation_started,
        E.discharged,
    ),
    S.prescribed: (E.dispensed, E.orders_cancelled, E.consultation_ended, E.consultation_started, E.discharged),
    S.skin_test: (E.skin_test_result, E.orders_cancelled, E.consultation_ended),
    S.dispensed: (E.infusion_started, E.orders_cancelled, E.consultation_started, E.discharged),
    S.in_infusion: (E.infusion_finished, E.orders_cancelled, E.discharged),
    S.discharged: (E.orders_cancelled,),
}


def allowed_events(state: VisitState) -> tuple[EventType, ...]:
    """The events the visit accepts now, after the finer conditions."""
    return tuple(e for e in ALLOWED[state.stage] if _condition(state, e) is None)


def _condition(state: VisitState, event: EventType) -> str | None:
    """Why an event the stage lists is still refused, or None."""
    if event is E.consultation_started and state.stage is S.in_consultation and state.consultation_open:
        return "the consultation is already open"
    if event is E.discharged and state.stage is S.in_consultation and state.consultation_open:
        return "the consultation is still open: end it first"
    if event is E.discharged and state.stage is S.in_infusion and not state.infusion_done:
        return "the infusion is still running: finish it first"
    if event is E.infusion_started and not state.infusion_prescribed:
        return "no infusion was prescribed"
    if event is E.infusion_finished and state.infusion_done:
        return "the infusion has already finished"
    if event is E.orders_placed and state.stage is S.in_consultation and not state.consultation_open:
        return "orders are placed during a consultation"
    if event is E.prescribed and not state.consultation_open:
        return "prescriptions are written during a consultation"
    if event is E.consultation_ended and state.stage is S.in_consultation and not state.consultation_open:
        return "the consultation has already ended"
    return None


def _refuse(
    state: VisitState, event: Event, detail: str, code: RefusalCode = RefusalCode.invalid_transition
) -> Refusal:
    return Refusal(code=code, stage=state.stage, detail=detail, allowed=allowed_events(state))


def _check_new_items(state: VisitState, event: Event) -> Refusal | None:
    if not event.items:
        return _refuse(state, event, f"{event.type} needs at least one item", RefusalCode.invalid_item)
    seen: set[str] = set()
    for item in event.items:
        if item.item_id in seen or item.item_id in state.active_items or item.item_id in state.cancelled_items:
            return _refuse(state, event, f"item {item.item_id} was already ordered", RefusalCode.duplicate_item)
        seen.add(item.item_id)
        if not is_valid_amount(item.unit_price_fen, allow_zero=True) or not (1 <= item.quantity <= 10_000):
            return _refuse(
                state, event, f"item {item.item_id} has an invalid price or quantity", RefusalCode.invalid_item
            )
        if not is_valid_amount(item.amount_fen, allow_zero=True):
            return _refuse(state, event, f"item {item.item_id} amounts to more than allowed", RefusalCode.invalid_item)
    return None


def _check_known_items(state: VisitState, event: Event, pool: frozenset[str] | set[str], what: str) -> Refusal | None:
    if not event.item_ids:
        return _refuse(state, event, f"{event.type} needs at least one item id", RefusalCode.invalid_item)
    for item_id in event.item_ids:
        if item_id not in pool:
            return _refuse(state, event, f"item {item_id} is not {what}", RefusalCode.unknown_item)
    return None


def _with_items(state: VisitState, items: tuple[Item, ...]) -> VisitState:
    active = dict(state.active_items)
    active.update({i.item_id: i.category for i in items})
    pending = state.pending_results | {i.item_id for i in items if i.category in RESULT_CATEGORIES}
    infusion = state.infusion_prescribed or any(i.category is Category.infusion for i in items)
    return replace(state, active_items=active, pending_results=frozenset(pending), infusion_prescribed=infusion)


def apply(state: VisitState, event: Event) -> Transition | Refusal:
    """The visit after `event`, with the charges to book and reverse, or why not."""
    if event.type not in ALLOWED[state.stage]:
        return _refuse(state, event, f"{event.type} is not allowed while the visit is {state.stage}")
    why = _condition(state, event.type)
    if why:
        return _refuse(state, event, why)

    t = event.type
    if t is E.checked_in:
        return Transition(state=replace(state, stage=S.checked_in))
    if t is E.called:
        return Transition(state=replace(state, stage=S.called))
    if t is E.consultation_started:
        return Transition(state=replace(state, stage=S.in_consultation, consultation_open=True))
    if t is E.consultation_ended:
        if state.stage is not S.in_consultation:  # after a prescription: closes the consultation
            return Transition(state=replace(state, consultation_open=False))
        stage = S.awaiting_results if state.pending_results else S.in_consultation
        return Transition(state=replace(state, stage=stage, consultation_open=False))
    if t is E.orders_placed:
        refusal = _check_new_items(state, event)
        if refusal:
            return refusal
        return Transition(state=_with_items(state, event.items), charge=event.items)
    if t is E.prescribed:
        refusal = _check_new_items(state, event)
        if refusal:
            return refusal
        nxt = _with_items(state, event.items)
        stage = S.skin_test if event.skin_test_required else S.prescribed
        return Transition(state=replace(nxt, stage=stage), charge=event.items)
    if t is E.orders_cancelled:
        refusal = _check_known_items(state, event, set(state.active_items), "an active order of this visit")
        if refusal:
            return refusal
        ids = frozenset(event.item_ids)
        active = {k: v for k, v in state.active_items.items() if k not in ids}
        nxt = replace(
            state,
            active_items=active,
            cancelled_items=state.cancelled_items | ids,
            pending_results=state.pending_results - ids,
            infusion_prescribed=any(c is Category.infusion for c in active.values()),
        )
        if nxt.stage is S.awaiting_results and not nxt.pending_results:
            nxt = replace(nxt, stage=S.in_consultation)
        return Transition(state=nxt, reverse=tuple(event.item_ids))
    if t is E.results_ready:
        refusal = _check_known_items(state, event, state.pending_results, "awaiting a result")
        if refusal:
            return refusal
        return Transition(state=replace(state, pending_results=state.pending_results - set(event.item_ids)))
    if t is E.skin_test_result:
        if event.skin_test_positive is None:
            return _refuse(state, event, "skin_test_result needs a result", RefusalCode.invalid_item)
        if event.skin_test_positive:  # back to the doctor for another prescription
            return Transition(state=replace(state, stage=S.in_consultation, consultation_open=True))
        return Transition(state=replace(state, stage=S.prescribed))
    if t is E.dispensed:
        return Transition(state=replace(state, stage=S.dispensed))
    if t is E.infusion_started:
        return Transition(state=replace(state, stage=S.in_infusion, infusion_done=False))
    if t is E.infusion_finished:
        return Transition(state=replace(state, infusion_done=True))
    if t is E.discharged:
        return Transition(state=replace(state, stage=S.discharged, consultation_open=False))
    raise AssertionError(f"unhandled event type {t}")  # pragma: no cover - exhaustiveness test guards this
