"""An event's update that Temporal loses (its workflow task failed under load, say) while the
visit's workflow runs on: the HIS hears 503 `engine_unavailable`, never 409 "the visit is closed",
and the same event sent again is booked once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app
from tests.flows import Clinic, assert_problem
from tests.support import uid


class LoseFirstUpdate(Interceptor):
    """The first two `record_event` updates of each event id are lost on their way, as Temporal
    answers an update whose speculative workflow task failed: NOT_FOUND (the API asks once more
    by itself, as for a workflow not started yet; the second is lost too)."""

    def __init__(self) -> None:
        self.lost: Counter[str] = Counter()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Lose(next, self.lost)


class _Lose(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, lost: Counter[str]) -> None:
        super().__init__(next)
        self._lost = lost

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        event_id = str(input.update_id).rsplit(":", 1)[0]
        if input.update == "record_event" and self._lost[event_id] < 2:
            self._lost[event_id] += 1
            raise RPCError("update not found", RPCStatusCode.NOT_FOUND, b"")
        return await super().start_workflow_update(input)


async def test_a_lost_update_is_a_503_to_send_again(temporal_env, settings, worker, integrations) -> None:
    losing = await Client.connect(
        temporal_env.client.service_client.config.target_host, interceptors=[LoseFirstUpdate()]
    )
    app = create_app(settings, temporal=losing, integrations=integrations)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            his = {"Authorization": f"Bearer {settings.his_api_key}"}
            clinic = Clinic.over(http, his)
            patient_id, _ = await clinic.enrolled_patient()
            visit_id = (await clinic.register(patient_id))["visit_id"]
            event = {"event_id": uid("e"), "type": "checked_in", "occurred_at": "2026-03-01T09:00:00+08:00",
                     "channel": "app"}  # fmt: skip
            lost = await http.post(f"/v1/his/visits/{visit_id}/events", headers=his, json=event)
            assert_problem(lost, 503, "engine_unavailable")
            assert lost.headers["Retry-After"]
            again = await http.post(f"/v1/his/visits/{visit_id}/events", headers=his, json=event)
            assert again.status_code == 200, again.text
            assert again.json()["stage"] == "checked_in"
            assert [e["event_id"] for e in again.json()["events"]] == [event["event_id"]]
