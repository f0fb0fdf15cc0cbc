"""An operator checks a day's totals with the insurance bureau (3201 对总账, `nhsa`) or the
fiscal e-bill platform (`ebill`, checkTotalData) on demand, as the morning run does: the run is
answered and stored; a counterpart this hospital has not set up is refused."""

from __future__ import annotations

import dataclasses

from tests.flows import assert_problem

QUIET_DAY = "2025-01-02"  # nothing settled that day in any test


async def test_an_operator_runs_the_bureaus_and_the_platforms_checks_for_a_day(api) -> None:
    for channel in ("nhsa", "ebill"):
        r = await api.http.post("/v1/ops/statements", json={"channel": channel, "day": QUIET_DAY}, headers=api.ops)
        assert r.status_code == 200, r.text
        run = r.json()
        assert (run["channel"], run["day"], run["mismatches"]) == (channel, QUIET_DAY, [])
        query = {"channel": channel, "day": QUIET_DAY}
        listed = await api.http.get("/v1/ops/statements", params=query, headers=api.ops)
        assert [(x["channel"], x["day"]) for x in listed.json()] == [(channel, QUIET_DAY)]


async def test_a_check_of_a_counterpart_not_set_up_is_refused(api) -> None:
    state = api.http._transport.app.state.yhf  # this test's app: no e-bill platform, no bureau
    api.http._transport.app.state.yhf = dataclasses.replace(state, ebill=None, bureau=None)
    for channel in ("nhsa", "ebill"):
        r = await api.http.post("/v1/ops/statements", json={"channel": channel, "day": QUIET_DAY}, headers=api.ops)
        assert_problem(r, 409, "channel_unavailable")
    bad = await api.http.post("/v1/ops/statements", json={"channel": "bureau", "day": QUIET_DAY}, headers=api.ops)
    assert bad.status_code == 422


async def test_a_day_that_is_no_calendar_day_is_refused(api) -> None:
    for day in ("0000-00-00", "2025-02-30"):
        r = await api.http.post("/v1/ops/statements", json={"channel": "nhsa", "day": day}, headers=api.ops)
        assert r.status_code == 422, r.text
