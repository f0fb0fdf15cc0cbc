"""The event body (`POST /v1/his/visits/{visit_id}/events`): one model per event type, a union
on `type` in OpenAPI with an example each, the same JSON as before accepted and refused alike,
and a retried event's idempotency hash unchanged from v1.0's flat body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from api import schemas as s, services as svc
from api.main import create_app
from domain.visit import EventType
from tests.api.test_edges import client
from tests.flows import assert_problem
from tests.support import free_port

EVENTS = "/v1/his/visits/{visit_id}/events"
HIS = {"Authorization": "Bearer dev-his-key"}


def test_openapi_event_body_is_a_union_on_type_with_an_example_per_type(settings) -> None:
    spec = create_app(settings).openapi()
    schemas = spec["components"]["schemas"]
    content = spec["paths"][EVENTS]["post"]["requestBody"]["content"]["application/json"]
    union = schemas[content["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == {str(t) for t in EventType}
    assert len(union["oneOf"]) == len(EventType)
    for kind in EventType:
        variant = schemas[mapping[str(kind)].rsplit("/", 1)[-1]]
        (example,) = variant["examples"]
        assert example["type"] == str(kind)
        assert set(example) <= set(variant["properties"]) and set(variant["required"]) <= set(example)
        assert type(s.VisitEventIn.model_validate_json(json.dumps(example)).root) is s.EVENT_MODELS[kind]
        # /docs offers the same body to try, one per type
        assert content["examples"][str(kind)]["value"] == example


def test_every_event_type_has_its_model() -> None:
    assert set(s.EVENT_MODELS) == set(EventType)
    for kind, model in s.EVENT_MODELS.items():
        assert model.model_fields["type"].annotation.__args__ == (kind,)  # type: ignore[union-attr]


# hashes the flat VisitEventIn of v1.0 gave these bodies (svc.body_hash(model)), before the union
STORED = [
    (
        {"event_id": "e1", "type": "checked_in", "occurred_at": "2026-03-01T08:00:00+08:00", "channel": "app"},
        "be0c4f62532d97b673dad19007f59b4cd3d2f177927fdca9b4c72777de4326e6",
    ),
    (
        {
            "event_id": "e2",
            "type": "prescribed",
            "occurred_at": "2026-03-01T09:00:00+08:00",
            "items": [
                {
                    "item_id": "i1",
                    "code": "D1",
                    "name": "阿莫西林",
                    "category": "drug",
                    "unit_price_fen": 1250,
                    "quantity": 2,
                }
            ],
        },
        "8d1f5b3e47701c09af044b8aeb3f527aca6d898af5e273eb64b62000d29089d3",
    ),
    (
        {"event_id": "e3", "type": "discharged", "occurred_at": "2026-03-01T10:00:00Z"},
        "074cfb750cc66d28e4bd9716fcf7b541182c0b1ae325e6e494d963ca0bde23ce",
    ),
]


@pytest.mark.parametrize(("body", "stored"), STORED)
def test_a_retried_event_hashes_as_it_did_before_the_union(body: dict[str, Any], stored: str) -> None:
    event = s.VisitEventIn.model_validate_json(json.dumps(body))
    assert svc.body_hash(event.flat()) == stored
    # and a different body under the same event id is not the same request
    changed = {**body, "occurred_at": "2026-03-01T11:00:00+08:00"}
    assert svc.body_hash(s.VisitEventIn.model_validate_json(json.dumps(changed)).flat()) != stored


@pytest.mark.parametrize(
    "body",
    [
        {"type": "called", "channel": "app"},  # the README's line copied onto `called`: takes no channel
        {"type": "checked_in"},  # needs a channel
        {"type": "teleported"},
        {"occurred_at": "2026-03-01T10:00:00+08:00"},  # no type
        {"type": "prescribed", "skin_test_required": True},  # needs items
        {"type": "discharged", "result": "negative"},
    ],
)
async def test_a_body_with_the_wrong_fields_is_a_422_problem(settings, body: dict[str, Any]) -> None:
    nowhere = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with client(nowhere) as http:  # refused before any visit or Temporal is asked
        r = await http.post(
            EVENTS.format(visit_id="v-nowhere"),
            headers=HIS,
            json={"event_id": "e-1", "occurred_at": "2026-03-01T10:00:00+08:00", **body},
        )
    problem = assert_problem(r, 422, "invalid_request")
    assert problem["errors"] and all(e["loc"][0] == "body" for e in problem["errors"])


def test_the_models_accept_what_the_flat_body_accepted() -> None:
    ok = {"event_id": "e-1", "occurred_at": "2026-03-01T10:00:00+08:00"}
    assert s.VisitEventIn.model_validate({**ok, "type": "called"}).flat()["room"] is None
    called = s.VisitEventIn.model_validate({**ok, "type": "called", "room": "3"}).root
    assert isinstance(called, s.CalledEvent) and called.room == "3"
    with pytest.raises(ValidationError):
        s.VisitEventIn.model_validate({**ok, "type": "called", "occurred_at": "2026-03-01T10:00:00"})
